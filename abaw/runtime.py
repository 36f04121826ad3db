"""What every command shares at run time: where its messages go and which device it runs on.

One of each, so that a module never defines its own stderr printer or device rule.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

#: A function that takes one progress or warning line.
Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    """Print ``message`` on stderr at once (progress lines must not wait for a buffer)."""
    print(message, file=sys.stderr, flush=True)


def pick_device(accelerator: str) -> torch.device:
    """cuda when asked for or available under ``auto``, else cpu."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")
