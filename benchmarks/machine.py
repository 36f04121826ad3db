"""The machine around a measurement, printed beside benchmark figures: other processes' CPU use
since a mark, the load average, and a process's memory as /proc reports it."""

from __future__ import annotations

import os
import time
from pathlib import Path


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def cpu_mark() -> tuple[float, float, float]:
    """(wall, machine busy CPU s, this process tree's CPU s), for :func:`others`."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    t = os.times()
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    return time.perf_counter(), busy, t.user + t.system + t.children_user + t.children_system


def others(mark: tuple[float, float, float]) -> str:
    """Cores other processes kept busy since ``mark``, and the load average."""
    wall, busy, own = cpu_mark()
    return f"others {max(0.0, (busy - mark[1]) - (own - mark[2])) / (wall - mark[0]):.2f} cores, {load()}"


def status_kib(field: str, pid: int | str = "self") -> int:
    """A kB field of ``/proc/<pid>/status`` (VmRSS, VmHWM, RssAnon, RssFile, ...); 0 when the
    process has ended or the field is absent."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass  # the process ended between listing and reading
    return 0
