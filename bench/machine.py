"""What else is using the machine: CPU readings from /proc that tell others' load from ours."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

PROC = Path("/proc")


def _cpu_ticks() -> tuple[int, int]:
    """(all ticks, idle + iowait ticks) over every CPU since boot."""
    fields = [int(v) for v in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)


def _process_ticks(pid: int) -> int:
    """User + system ticks of one process (0 once it is gone)."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])


def process_group_pids(pgids: Iterable[int]) -> list[int]:
    """Every live process in these process groups (a server and whatever it forked)."""
    wanted = set(pgids)
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) in wanted:
                found.append(int(entry.name))
    return found


def cpu_busy(seconds: float = 1.0, ours: Callable[[], Iterable[int]] | None = None) -> float | None:
    """Share of all CPUs busy over `seconds`, not counting the processes `ours()` names
    (read at the start): the load that other work puts on the machine. None without /proc."""
    try:
        mine = list(ours()) if ours else []
        total0, idle0 = _cpu_ticks()
        mine0 = sum(_process_ticks(p) for p in mine)
        time.sleep(seconds)
        total1, idle1 = _cpu_ticks()
        mine1 = sum(_process_ticks(p) for p in mine)
    except (OSError, ValueError, IndexError):
        return None
    total = max(total1 - total0, 1)
    busy = total - (idle1 - idle0) - (mine1 - mine0)
    return min(max(busy / total, 0.0), 1.0)


def busy_cpu_seconds() -> float | None:
    """CPU seconds spent on anything but idling, over every CPU, since boot (None without
    /proc): the difference over a run is what the whole machine spent on it."""
    try:
        total, idle = _cpu_ticks()
    except (OSError, ValueError, IndexError):
        return None
    return (total - idle) / os.sysconf("SC_CLK_TCK")


def cpu_count() -> int:
    return os.cpu_count() or 1
