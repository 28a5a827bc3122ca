"""The checkpoint benchmark, which two scripts share (SQLite's and PostgreSQL's lines both drive
``stdio_figures``), still runs end to end: with tiny counts, so what is checked is that every line
and every ratio is printed, never a speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .support import server_env

pytestmark = pytest.mark.processes

CHECKPOINT = Path(__file__).parent.parent / "benchmarks" / "checkpoint.py"


def benchmark(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(CHECKPOINT), *args],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=cwd,
        env=server_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_on_sqlite_every_line_and_ratio_is_printed(tmp_path: Path) -> None:
    out = benchmark("--n", "64", "--dir", str(tmp_path), cwd=tmp_path)
    for line in (
        "raw sqlite3 (1 row per commit)",
        "floor, sequential",
        "floor, 16 concurrent runs",
        "engine, sequential",
        "engine, 16 concurrent runs",
        "no-op tool over stdio (SDK baseline)",
        "checkpoint tool over stdio",
        "no-op tool + floor's commit over stdio",
        "engine sequential / raw sqlite3",
        "checkpoint tool / no-op tool (stdio)",
        "floor, 16 concurrent / raw sqlite3",
        "no-op tool + floor's commit / no-op tool (stdio)",
    ):
        assert line in out, f"{line!r} missing from:\n{out}"
    assert "/s  p50" in out
    assert list(tmp_path.iterdir()) == []  # its databases went with its temporary directory


def test_on_postgresql_every_line_and_ratio_is_printed(postgres_database: str, tmp_path: Path) -> None:
    out = benchmark("--db", postgres_database, "--n", "32", "--seconds", "0.2", cwd=tmp_path)
    for line in (
        "raw asyncpg, a checkpoint's rows",
        "engine, 16 concurrent runs",
        "checkpoint tool over stdio",
        "3 nodes  engine",
        "engine sequential / raw rows",
        "checkpoint tool / no-op tool (stdio)",
    ):
        assert line in out, f"{line!r} missing from:\n{out}"
