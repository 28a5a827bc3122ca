"""What the benchmarks share: percentiles, a process's CPU time, the environment and the bare server they
start processes with."""

from __future__ import annotations

import os
from pathlib import Path

BARE_SERVER = Path(__file__).with_name("bare_server.py")  # a bare SDK server: the baseline of servers


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a process a benchmark starts: what it needs to run, and ``PYTHONPATH``, which may
    name an older copy of the code to measure."""
    passed = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "PYTHONPATH") if name in os.environ}
    return {**passed, **extra}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
