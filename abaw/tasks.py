"""The four ABAW tasks, defined once.

Everything that differs between tasks lives here: label names (in the organisers' order),
the invalid code of the annotation files, the folder names every edition used, the test-list
file name and the submission header. The readers, the metrics and the writers all take their
knowledge from these objects, so a format fact is written in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["multiclass", "regression", "multilabel", "binary"]

EXPR_CLASSES = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
AU_NAMES = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")
VA_NAMES = ("valence", "arousal")

# HSEmotion models emit AffectNet-8 logits (Anger, Contempt, Disgust, Fear, Happiness, Neutral,
# Sadness, Surprise). ``logits[..., ABAW_FROM_AFFECTNET]`` puts them in EXPR_CLASSES order, with
# Contempt standing in for Other.
ABAW_FROM_AFFECTNET = (5, 0, 2, 3, 4, 6, 7, 1)


@dataclass(frozen=True)
class Task:
    """One challenge task.

    Attributes:
        name: short lower-case name used on the command line (``expr``, ``va``, ``au``, ``vd``).
        dataset: ``affwild2`` or ``dvd``.
        kind: shape of the target: one class per frame, real values, several binary labels, or
            one binary label.
        labels: column names of the annotation header, in file order.
        invalid: the code that marks a value as not annotated (None if the task has none).
        annotation_dirs: task folder names under ``annotations/`` across editions.
        test_list: file name of the test-track list in ``names_of_videos_in_each_test_set/``.
        template_key: the word that names this task in the test-template file names.
        value_range: inclusive range of a valid label value.
    """

    name: str
    dataset: str
    kind: Kind
    labels: tuple[str, ...]
    invalid: float | None
    annotation_dirs: tuple[str, ...] = ()
    test_list: str = ""
    template_key: str = ""
    value_range: tuple[float, float] = (0.0, 1.0)

    @property
    def columns(self) -> int:
        """Number of label columns stored per frame: 1 for EXPR/VD, 2 for VA, 12 for AU."""
        return 1 if self.kind in ("multiclass", "binary") else len(self.labels)

    @property
    def output_size(self) -> int:
        """Number of model outputs: logits for classes, one per value or label otherwise."""
        return len(self.labels) if self.kind != "binary" else 1

    @property
    def submission_header(self) -> tuple[str, ...]:
        """Header of the one-file-per-task submission (6th edition onwards)."""
        if self.dataset == "dvd":
            return ("Frame_Number", "Label")
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
    value_range=(-1.0, 1.0),
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
    value_range=(0, 1),
)
VD = Task(
    name="vd",
    dataset="dvd",
    kind="binary",
    labels=("Label",),
    invalid=None,
    value_range=(0, 1),
)

TASKS: dict[str, Task] = {t.name: t for t in (EXPR, VA, AU, VD)}
AFFWILD2_TASKS = (EXPR, VA, AU)


def get_task(name: str) -> Task:
    """Return the task called ``name`` (case-insensitive); unknown names list the valid ones."""
    try:
        return TASKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}") from None
