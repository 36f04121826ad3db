"""The transcript text stream: a transformers encoder loaded by local path (a tiny random model
saved with save_pretrained here), rows on the frames' times, the store and its inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from features.extract import Job, extract_text
from features.specs import create_extractor, make_spec, registered
from features.store import FeatureStore
from tests.conftest import clip

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "yes", "i", "will", "maybe", "not", "um", "but"]
SEGMENTS = [(0.0, 1.0, "yes I will"), (3.0, 4.0, "um maybe not"), (6.0, 7.0, "   ")]


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> Path:
    """A tiny random BERT and a word-level tokenizer, written as a team would ship a model."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("text-model")
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]").save_pretrained(folder)
    config = BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertModel(config).save_pretrained(folder)
    return folder


def test_text_is_a_registered_extractor_loaded_from_a_local_directory(text_model, tmp_path):
    assert "text" in registered()
    extractor = create_extractor("text", model=str(text_model))
    assert extractor.output_dims == {"features": 16} and extractor.tokenizer is not None
    vectors = extractor.embed(["yes I will", "um maybe not"])
    assert vectors.shape == (2, 16) and not np.allclose(vectors[0], vectors[1])
    moved = tmp_path / "moved"
    shutil.copytree(text_model, moved)  # the content names the cache, not the path
    assert make_spec("text", model=str(moved)).fingerprint() == make_spec("text", model=str(text_model)).fingerprint()
    assert make_spec("text", model=str(tmp_path / "absent")).missing_weights()


def test_rows_take_the_segments_of_their_time_window(text_model):
    extractor = create_extractor("text", model=str(text_model), window=0.5)
    times = np.array([0.5, 2.0, 3.5, 4.4, 6.5, 9.0])
    rows, valid = extractor.frame_rows(SEGMENTS, times)
    assert valid.tolist() == [True, False, True, True, False, False]  # silence and blank text: no row
    first, second = extractor.embed(["yes I will", "um maybe not"])
    assert np.allclose(rows[0], first, atol=1e-5) and np.allclose(rows[2], second, atol=1e-5)
    assert np.allclose(rows[3], second, atol=1e-5) and not rows[~valid].any()
    wide = create_extractor("text", model=str(text_model), window=2.5)
    rows, valid = wide.frame_rows(SEGMENTS, np.array([2.0]))
    assert valid.all() and np.allclose(rows[0], (first + second) / 2, atol=1e-5)  # both within 2.5 s


def test_a_random_config_reads_bytes_reproducibly():
    config = {"model_type": "bert", "vocab_size": 260, "hidden_size": 8, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 64}
    first = create_extractor("text", config=config).embed(["hello", "um, maybe"])
    again = create_extractor("text", config=config).embed(["hello", "um, maybe"])
    assert first.shape == (2, 8) and np.array_equal(first, again)
    with pytest.raises(ValueError, match="vocab_size must be >= 259"):
        create_extractor("text", config={**config, "vocab_size": 100})


def test_extract_text_writes_rows_on_the_decoded_frames(text_model, tmp_path):
    video = clip("single_face.mp4")
    from features.media import frame_index

    frames = len(frame_index(video).pts)
    extractor = create_extractor("text", model=str(text_model))
    store = FeatureStore.for_spec(tmp_path, "bah-test", extractor.spec)
    job = Job("q1", frames, video, inputs={"rows": frames, "video": "q1.mp4", "faces": "detected", "transcript": "ab"})
    outcome = extract_text(extractor, [job, Job("q2", frames, video, inputs={"transcript": None})], store, lambda m: None,
                           {"q1": SEGMENTS[:1], "q2": []})
    assert sorted(outcome.written) == ["q1", "q2"] and not outcome.failed
    assert store.read("q1").shape == (frames, 16) and store.read("q1", "valid").any()
    assert not store.read("q2", "valid").any()  # no transcript: every row invalid
    assert store.record("q1")["inputs"] == {"rows": frames, "video": "q1.mp4", "transcript": "ab"}  # not the faces
    again = extract_text(extractor, [job], store, lambda m: None, {"q1": SEGMENTS[:1]})
    assert again.skipped == ["q1"]
    assert job.inputs_for("audio") == {"rows": frames, "video": "q1.mp4"}  # audio ignores the transcript
    assert "transcript" not in job.inputs_for("visual")
