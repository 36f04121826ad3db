import pytest

from abaw.tasks import ABAW_FROM_AFFECTNET, AU, EXPR, VA, VD, get_task


def test_headers_and_sizes_follow_the_formats():
    assert ",".join(EXPR.submission_header) == (
        "image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other")
    assert ",".join(VA.submission_header) == "image_location,valence,arousal"
    assert ",".join(AU.submission_header) == (
        "image_location,AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26")
    assert VD.submission_header == ("Frame_Number", "Label")
    assert (EXPR.columns, VA.columns, AU.columns, VD.columns) == (1, 2, 12, 1)
    assert (EXPR.output_size, VA.output_size, AU.output_size, VD.output_size) == (8, 2, 12, 1)


def test_affectnet_reorder_maps_names_onto_abaw_order():
    affectnet = ("Anger", "Contempt", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise")
    mapped = [affectnet[i] for i in ABAW_FROM_AFFECTNET]
    assert mapped[:7] == list(EXPR.labels[:7]) and mapped[7] == "Contempt"


def test_unknown_task_lists_the_valid_ones():
    assert get_task("EXPR") is EXPR
    with pytest.raises(ValueError, match="expr, va, au, vd"):
        get_task("emotion")
