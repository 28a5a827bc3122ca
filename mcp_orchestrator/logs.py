"""Sub-agents' log files: one directory per run, stdout.log and stderr.log appended across attempts."""

from __future__ import annotations

from pathlib import Path

STREAMS = ("stdout", "stderr")
_TAIL_BYTES = 256 * 1024  # enough for the last lines of any sane log


def log_path(log_dir: Path, stream: str) -> Path:
    return log_dir / f"{stream}.log"


def tail_lines(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a file (read from its end, so a huge log costs no more)."""
    if lines <= 0:
        return []
    try:
        with path.open("rb") as file:
            size = file.seek(0, 2)
            file.seek(max(size - _TAIL_BYTES, 0))
            data = file.read()
    except FileNotFoundError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]


def read_log_tails(log_dir: Path, lines: int) -> dict[str, list[str]]:
    return {stream: tail_lines(log_path(log_dir, stream), lines) for stream in STREAMS}
