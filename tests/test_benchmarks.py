"""Benchmarks that share code or compare against something computed still run and measure what they say:
the checkpoint benchmark (SQLite's and PostgreSQL's lines both drive ``stdio_figures``) prints every line
and ratio with tiny counts (never checked for speed), and the sizes of ``status.py`` (bytes, not time)
meet their targets against a baseline made from the tools' own models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .support import server_env

pytestmark = pytest.mark.processes

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def benchmark(*args: str, cwd: Path, script: str = "checkpoint.py", timeout: float = 110) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
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


@pytest.mark.timeout(300)  # six measurements of nodes, each waiting 3 s for its processes to start
def test_on_postgresql_every_line_and_ratio_is_printed(postgres_database: str, tmp_path: Path) -> None:
    out = benchmark("--db", postgres_database, "--n", "32", "--seconds", "0.2", cwd=tmp_path, timeout=280)
    for line in (
        "raw asyncpg, a checkpoint's rows",
        "engine, 16 concurrent runs",
        "checkpoint tool over stdio",
        "3 nodes  engine",
        "engine sequential / raw rows",
        "checkpoint tool / no-op tool (stdio)",
    ):
        assert line in out, f"{line!r} missing from:\n{out}"


def test_the_sizes_a_model_is_handed_meet_their_targets(tmp_path: Path) -> None:
    out = benchmark("--sizes-only", cwd=tmp_path, script="status.py")
    lines = [line for line in out.splitlines() if "bytes" in line]
    assert len(lines) == 4 and all(line.endswith(": meets") for line in lines), out
    schemas = next(line for line in lines if "tool schemas" in line)
    assert int(schemas.split()[4].replace(",", "")) > 100_000, schemas  # the models' own schemas, uncompacted
