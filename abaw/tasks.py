"""The six ABAW tasks, defined once.

Everything that differs between tasks lives here: label names (in the organisers' order),
the invalid code of the annotation files, the folder names every edition used, the test-list
file name, the metric and the submission header. The readers, the metrics and the writers all
take their knowledge from these objects, so a format fact is written in exactly one place.

Four tasks label frames (EXPR, VA, AU on Aff-Wild2; VD on DVD); two label whole videos (EMI on
Hume-Vidmimic2, A/H on BAH). ``Task.level`` says which: the frame-wise readers, extraction,
training and cross-validation handle ``frame`` tasks only and skip the others by that field,
never by a list of names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["multiclass", "regression", "multilabel", "binary"]
# macro_f1: mean per-class F1 (EXPR, VD, A/H); ccc: mean concordance correlation (VA); f1: mean
# binary F1 of each label's positive class (AU); pearson: mean Pearson r per dimension (EMI).
Metric = Literal["macro_f1", "ccc", "f1", "pearson"]
Level = Literal["frame", "video"]

EXPR_CLASSES = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
AU_NAMES = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")
VA_NAMES = ("valence", "arousal")
EMI_NAMES = ("Admiration", "Amusement", "Determination", "Empathic Pain", "Excitement", "Joy")

# HSEmotion models emit AffectNet-8 logits (Anger, Contempt, Disgust, Fear, Happiness, Neutral,
# Sadness, Surprise). ``logits[..., ABAW_FROM_AFFECTNET]`` puts them in EXPR_CLASSES order, with
# Contempt standing in for Other.
ABAW_FROM_AFFECTNET = (5, 0, 2, 3, 4, 6, 7, 1)


@dataclass(frozen=True)
class Task:
    """One challenge task.

    Attributes:
        name: short lower-case name used on the command line (``expr``, ``va``, ``au``, ``vd``,
            ``emi``, ``ah``).
        dataset: ``affwild2``, ``dvd``, ``emi`` (Hume-Vidmimic2) or ``bah``.
        kind: shape of the target: one class per frame, real values, several binary labels, or
            one binary label.
        labels: column names of the annotation header, in file order.
        invalid: the code that marks a value as not annotated (None if the task has none).
        annotation_dirs: task folder names under ``annotations/`` across editions.
        test_list: file name of the test-track list in ``names_of_videos_in_each_test_set/``.
        template_key: the short name that keys this task's test list and template.
        file_words: the words (any case, between ``_``, ``-``, ``.`` or spaces) that name this task
            in the file names of its test list and template, across editions
            (``Expression_Recognition_Challenge_test_set_release.txt``,
            ``CVPR_6th_ABAW_Expr_test_set_example.txt``, ``expr_test_template.txt``).
        value_range: inclusive range of a valid label value.
        metric: the official metric (see :data:`Metric`).
        level: ``frame`` (one label row per frame) or ``video`` (one label row per video).
    """

    name: str
    dataset: str
    kind: Kind
    labels: tuple[str, ...]
    invalid: float | None
    annotation_dirs: tuple[str, ...] = ()
    test_list: str = ""
    template_key: str = ""
    file_words: tuple[str, ...] = ()
    value_range: tuple[float, float] = (0.0, 1.0)
    metric: Metric = "macro_f1"
    level: Level = "frame"

    @property
    def columns(self) -> int:
        """Number of label columns stored per row: 1 for EXPR/VD/A/H, 2 for VA, 12 for AU, 6 for EMI."""
        return 1 if self.kind in ("multiclass", "binary") else len(self.labels)

    @property
    def output_size(self) -> int:
        """Number of model outputs: logits for classes, one per value or label otherwise."""
        return len(self.labels) if self.kind != "binary" else 1

    @property
    def submission_header(self) -> tuple[str, ...]:
        """Header of the submission file: the one-file-per-task format of Aff-Wild2 (6th edition
        onwards), DVD's per-video CSV, EMI's CSV (the split files' header), A/H's list."""
        if self.dataset == "dvd":
            return ("Frame_Number", "Label")
        if self.dataset == "emi":
            return ("Filename", *self.labels)
        if self.dataset == "bah":
            return ("video_path", "pred")
        return ("image_location", *self.labels)


EXPR = Task(
    name="expr",
    dataset="affwild2",
    kind="multiclass",
    labels=EXPR_CLASSES,
    invalid=-1,
    annotation_dirs=(
        "EXPR_Recognition_Challenge",
        "EXPR_Classification_Challenge",
        "EXPR_Set",
    ),
    test_list="Expression_Recognition_Challenge_test_set_release.txt",
    template_key="expr",
    file_words=("expr", "expression", "expressions"),
    value_range=(0, len(EXPR_CLASSES) - 1),
)
VA = Task(
    name="va",
    dataset="affwild2",
    kind="regression",
    labels=VA_NAMES,
    invalid=-5,
    annotation_dirs=("VA_Estimation_Challenge", "VA_Set"),
    test_list="Valence_Arousal_Estimation_Challenge_test_set_release.txt",
    template_key="va",
    file_words=("va", "valence", "arousal"),
    value_range=(-1.0, 1.0),
    metric="ccc",
)
AU = Task(
    name="au",
    dataset="affwild2",
    kind="multilabel",
    labels=AU_NAMES,
    invalid=-1,
    annotation_dirs=("AU_Detection_Challenge", "AU_Set"),
    test_list="Action_Unit_Detection_Challenge_test_set_release.txt",
    template_key="au",
    file_words=("au", "aus", "action"),
    value_range=(0, 1),
    metric="f1",
)
VD = Task(
    name="vd",
    dataset="dvd",
    kind="binary",
    labels=("Label",),
    invalid=None,
    value_range=(0, 1),
)

EMI = Task(
    name="emi",
    dataset="emi",
    kind="regression",
    labels=EMI_NAMES,
    invalid=None,
    value_range=(0.0, 1.0),
    metric="pearson",
    level="video",
)
AH = Task(
    name="ah",
    dataset="bah",
    kind="binary",
    labels=("ah",),
    invalid=None,
    value_range=(0, 1),
    level="video",
)

TASKS: dict[str, Task] = {t.name: t for t in (EXPR, VA, AU, VD, EMI, AH)}
AFFWILD2_TASKS = (EXPR, VA, AU)
FRAME_TASKS = tuple(t for t in TASKS.values() if t.level == "frame")
VIDEO_TASKS = tuple(t for t in TASKS.values() if t.level == "video")


def dataset_tasks(dataset: str) -> tuple[Task, ...]:
    """The tasks labelled on ``dataset``, in TASKS order."""
    return tuple(t for t in TASKS.values() if t.dataset == dataset)


def get_task(name: str) -> Task:
    """Return the task called ``name`` (case-insensitive); unknown names list the valid ones."""
    try:
        return TASKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None
