"""Which file of an Aff-Wild2 root is each task's test list and test template.

Test lists are read from the folder whose name starts with ``names_of_videos`` (the organisers'
``names_of_videos_in_each_test_set/``), templates from every folder whose name contains
``template`` or ``example`` (``test_set_examples/``). A ``.txt`` or ``.csv`` file there belongs to
the one task whose words (:attr:`abaw.tasks.Task.file_words`) its name contains, in any case,
between ``_``, ``-``, ``.`` or spaces: ``Expression_Recognition_Challenge_test_set_release.txt``,
``EXPR_test_set.txt``, ``CVPR_6th_ABAW_Expr_test_set_example.txt`` and ``expr_test_template.txt``
all name EXPR. Nothing is guessed quietly: a file there that names no task or several, a second
file for a task, and a file named for a task anywhere else at the top of the root are warnings
naming the file, and ``abaw inspect`` prints which file it read for each task.
"""

from __future__ import annotations

import re
from pathlib import Path

from abaw.data.records import Problem
from abaw.tasks import AFFWILD2_TASKS, Task

SUFFIXES = (".txt", ".csv")
LISTS_FOLDER = "names_of_videos_in_each_test_set"
WHERE = (f"test lists are read from {LISTS_FOLDER}/, templates from a folder whose name contains "
         "'template' or 'example'")


def is_lists_folder(name: str) -> bool:
    """True for the folder of test lists (``names_of_videos_in_each_test_set`` in any case)."""
    return name.lower().startswith("names_of_videos")


def is_templates_folder(name: str) -> bool:
    """True for a folder of test templates: its name contains ``template`` or ``example``."""
    return "example" in name.lower() or "template" in name.lower()


def tasks_named(name: str) -> list[Task]:
    """The Aff-Wild2 tasks whose words occur in the file name ``name`` (suffix ignored)."""
    words = set(re.split(r"[^a-z0-9]+", Path(name).stem.lower()))
    return [task for task in AFFWILD2_TASKS if words & set(task.file_words)]


def task_words() -> str:
    """``EXPR: expr/expression/expressions; VA: ...``: the words each task is recognised by."""
    return "; ".join(f"{t.name.upper()}: {'/'.join(t.file_words)}" for t in AFFWILD2_TASKS)


def _candidates(entries: list[Path]) -> list[Path]:
    # Hidden entries are skipped: a macOS copy leaves ._<name> beside every file, named alike.
    return [p for p in entries if p.suffix.lower() in SUFFIXES and not p.name.startswith(".")]


def sort_files(entries: list[Path], kind: str, found: dict[str, Path], unrecognised: list[Path],
               problems: list[Problem]) -> None:
    """File the ``.txt``/``.csv`` entries of a test-list or template folder by task.

    ``kind`` is ``test list`` or ``template``. ``found`` maps ``Task.template_key`` to the file
    read (the first in name order); a file naming no task or several goes to ``unrecognised``,
    and it and a second file of a task are warnings in ``problems``. A folder named like a file
    is kept, so that reading it reports it.
    """
    for path in _candidates(entries):
        tasks = tasks_named(path.name)
        if len(tasks) != 1:
            unrecognised.append(path)
            named = (f"names several tasks ({', '.join(t.name.upper() for t in tasks)})" if tasks
                     else f"names no task ({task_words()})")
            problems.append(Problem(path, f"not read as a {kind}: its name {named}", severity="warning"))
        elif tasks[0].template_key in found:
            problems.append(Problem(path, f"a second {tasks[0].name.upper()} {kind}, not read; reading "
                                          f"{found[tasks[0].template_key]}", severity="warning"))
        else:
            found[tasks[0].template_key] = path


def misplaced(entries: list[Path], unrecognised: list[Path], problems: list[Problem]) -> None:
    """Warn of every ``.txt``/``.csv`` entry named for a task where no test list or template is
    read (the top of the root, a folder of another name), and add it to ``unrecognised``."""
    for path in _candidates(entries):
        tasks = tasks_named(path.name)
        if tasks:
            unrecognised.append(path)
            names = " or ".join(t.name.upper() for t in tasks)
            problems.append(Problem(path, f"not read: named for {names} (a test list or template?), but {WHERE}",
                                    severity="warning"))


def _words(task: Task) -> str:
    return " or ".join(repr(word) for word in task.file_words)


def missing_template(task: Task, root: Path, folders: list[Path], unrecognised: list[Path]) -> str:
    """Why ``task`` has no test template at ``root``: where it was looked for, under which
    names, and the candidate files that were not recognised (those named for another task left out)."""
    where = (", ".join(f"{f.relative_to(root)}/" for f in folders) if folders
             else "a folder whose name contains 'template' or 'example' (there is none)")
    message = (f"no {task.name.upper()} test template: looked in {where} for a .txt or .csv file whose name "
               f"contains {_words(task)} (e.g. test_set_examples/CVPR_6th_ABAW_{task.name.upper()}_test_set_example"
               ".txt)")
    candidates = [p for p in unrecognised if task in tasks_named(p.name) or not tasks_named(p.name)]
    if candidates:
        message += f"; not recognised: {', '.join(str(p.relative_to(root)) for p in candidates)}"
    return message


def missing_list(task: Task, root: Path, folder: Path | None) -> str:
    """Why ``task`` has no test list at ``root``, and what that leaves unchecked."""
    where = f"{folder.relative_to(root)}/" if folder is not None else f"{LISTS_FOLDER}/ (absent)"
    return (f"no {task.name.upper()} test list: looked in {where} for a .txt or .csv file whose name contains "
            f"{_words(task)} (e.g. {task.test_list}); the template's tracks are "
            "not checked against a list")
