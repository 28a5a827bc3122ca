"""Durable steps from a shell: start, checkpoint and finish through the console script, and the example
nightly backup killed (kill -9) part way and run again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from .support import cli, eventually, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.processes]

REPO = Path(__file__).resolve().parent.parent
BACKUP = REPO / "examples" / "nightly-backup.sh"
NIGHT = "2026-12-01"


def steps_of(db: str | Path, run: str) -> dict[str, dict[str, Any]]:
    return {step["step"]: step for step in json.loads(cli(db, "status", run, "--json").stdout)["steps"]}


def test_start_with_a_key_prints_the_same_run_again(db: str) -> None:
    first = cli(db, "start", "nightly", "--key", "nightly-1", "--input", '{"source": "/srv"}', "--label", "job=b")
    again = cli(db, "start", "nightly", "--key", "nightly-1")
    other = cli(db, "start", "nightly")
    run = first.stdout.strip()
    assert again.stdout.strip() == run != other.stdout.strip()
    assert "0 step(s) completed: it goes on" in again.stderr
    shown = json.loads(cli(db, "status", run, "--json").stdout)["run"]
    assert (shown["name"], shown["key"], shown["input"], shown["labels"]) == (
        "nightly",
        "nightly-1",
        {"source": "/srv"},
        {"job": "b"},
    )
    assert len(json.loads(cli(db, "runs", "--name", "nightly", "--json").stdout)["runs"]) == 2


def test_a_completed_step_is_skipped_with_its_stored_output(db: str) -> None:
    run = cli(db, "start", "job").stdout.strip()
    begun = cli(db, "checkpoint", run, "dump", "--begin", "--exit-code")
    assert (begun.returncode, begun.stdout) == (0, "")
    cli(db, "checkpoint", run, "dump", "--output", '"/backups/db.sql"')
    again = cli(db, "checkpoint", run, "dump", "--begin", "--exit-code", check=False)
    assert (again.returncode, again.stdout) == (3, "/backups/db.sql\n")  # a string as it is, like jq -r
    assert "was completed before (attempt 1)" in again.stderr
    without = cli(db, "checkpoint", run, "dump", "--begin")  # without --exit-code a skip exits 0 as well
    assert (without.returncode, without.stdout) == (0, "/backups/db.sql\n")
    other = cli(db, "checkpoint", run, "dump", "--output", '{"x": 1}', "--exit-code", check=False)
    assert (other.returncode, other.stdout) == (3, "/backups/db.sql\n")  # the first output stands
    replayed = json.loads(cli(db, "checkpoint", run, "dump", "--begin", "--json").stdout)
    assert replayed["replayed"] is True and replayed["step"]["output"] == "/backups/db.sql"
    cli(db, "checkpoint", run, "count", "--output", '{"rows": 12}')
    assert cli(db, "checkpoint", run, "count", "--begin").stdout == '{"rows": 12}\n'  # any other value as JSON
    assert steps_of(db, run)["dump"]["attempt"] == 1


def test_a_step_begun_and_never_finished_is_pointed_out(db: str) -> None:
    run = cli(db, "start", "job").stdout.strip()
    cli(db, "checkpoint", run, "upload", "--begin")
    again = cli(db, "checkpoint", run, "upload", "--begin", "--exit-code")
    assert again.returncode == 0 and "attempt 1 of step 'upload' started and never finished" in again.stderr
    assert steps_of(db, run)["upload"]["attempt"] == 2


def test_failed_attempts_and_finishing(db: str) -> None:
    run = cli(db, "start", "job").stdout.strip()
    retried = cli(db, "checkpoint", run, "fetch", "--error", '"timeout"')
    assert "attempt 1 of step 'fetch' failed; another attempt may start at" in retried.stderr
    final = cli(db, "checkpoint", run, "fetch", "--error", '"404"', "--no-retry")
    assert "failed for good" in final.stderr and steps_of(db, run)["fetch"]["status"] == "failed"
    failed_step = cli(db, "checkpoint", run, "fetch", "--begin", check=False)
    assert failed_step.returncode == 1 and failed_step.stderr.startswith("step_failed: ")
    assert cli(db, "finish", run, "--error", '{"why": "fetch failed"}').stdout == f"run {run} failed\n"
    again = cli(db, "finish", run, "--error", '{"why": "fetch failed"}')
    assert again.stdout == f"run {run} failed (already; nothing changed)\n"
    otherwise = cli(db, "finish", run, "--output", "1", check=False)
    assert otherwise.returncode == 1 and otherwise.stderr.startswith("run_terminal: ")
    resumed = cli(db, "start", "job", "--key", "k")
    cli(db, "finish", resumed.stdout.strip(), "--error", '"x"')
    note = cli(db, "start", "job", "--key", "k").stderr
    assert f"'mcp-orchestrator retry {resumed.stdout.strip()}' makes it live again" in note
    done = json.loads(cli(db, "finish", run, "--error", '{"why": "fetch failed"}', "--json").stdout)
    assert done["replayed"] is True and done["run"]["error"] == {"why": "fetch failed"}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["checkpoint", "RUN", "s", "--output", "{nope"], "invalid_input: --output is not JSON"),
        (["checkpoint", "RUN", "s", "--begin", "--output", "1"], "--begin takes neither --output nor --error"),
        (["checkpoint", "RUN", "s", "--output", "1", "--error", "2"], "give --output (the step succeeded) or --error"),
        (["checkpoint", "RUN", ""], "invalid_input: invalid options: STEP: String should have at least 1 character"),
        (["checkpoint", "no-such-run", "s"], "run_not_found: "),
        (["finish", "RUN", "--output", "1", "--error", "2"], "give --output (the run completed) or --error"),
        (["start", ""], "invalid_input: invalid options: NAME: String should have at least 1 character (got '')"),
        (["start", "job", "--retry", '{"max_attempts": 0}'], "--retry max_attempts: Input should be greater than or"),
        (["start", "job", "--timeout", "-1"], "invalid options: --timeout: Input should be greater than 0 (got -1.0)"),
    ],
)
def test_bad_input_is_named(db_path: Path, args: list[str], says: str) -> None:
    run = cli(db_path, "start", "job").stdout.strip()
    result = cli(db_path, *[run if arg == "RUN" else arg for arg in args], check=False)
    assert result.returncode == 1 and says in result.stderr and "Traceback" not in result.stderr, result.stderr


def _wrappers(directory: Path) -> Path:
    """``tar`` and ``cp`` that log each call; ``cp`` hangs (marking that it did) while HANG_AT is set."""
    directory.mkdir()
    tar, cp = shutil.which("tar"), shutil.which("cp")
    assert tar and cp
    (directory / "tar").write_text(f'#!/bin/sh\necho "tar $1" >> "$CALLS"\nexec {tar} "$@"\n')
    (directory / "cp").write_text(
        '#!/bin/sh\necho cp >> "$CALLS"\n'
        'if [ -n "${HANG_AT:-}" ]; then : > "$HANG_AT"; exec sleep 600; fi\n'  # the work that gets killed
        f'exec {cp} "$@"\n'
    )
    for wrapper in directory.iterdir():
        wrapper.chmod(0o755)
    return directory


def _backup(tmp_path: Path, db: Path, **env: str) -> subprocess.Popen[str]:
    path = os.pathsep.join([str(tmp_path / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]])
    variables = {"SOURCE": str(tmp_path / "src"), "DEST": str(tmp_path / "dest"), "NIGHT": NIGHT, **env}
    return subprocess.Popen(
        ["sh", str(BACKUP)],
        env=server_env(PATH=path, MCP_ORCHESTRATOR_DB=str(db), CALLS=str(tmp_path / "calls"), **variables),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, killed whole
    )


async def test_the_nightly_backup_killed_mid_way_resumes_without_redoing_a_step(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "a.txt").write_text("a")
    (tmp_path / "src" / "sub" / "b.txt").write_text("b")
    (tmp_path / "dest").mkdir()
    _wrappers(tmp_path / "bin")
    hung = tmp_path / "copy-started"

    first = _backup(tmp_path, db, HANG_AT=str(hung))
    await eventually(hung.exists, timeout=60)  # killed while the upload copies
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    run = f"nightly-backup-{NIGHT}"  # the run's key names it
    steps = steps_of(db, run)
    assert {name: step["status"] for name, step in steps.items()} == {
        "snapshot": "completed",
        "verify": "completed",
        "upload": "started",
    }
    assert not (tmp_path / "dest" / f"backup-{NIGHT}.tar.gz").exists()

    second = _backup(tmp_path, db)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert out == f"backup for {NIGHT}: {tmp_path / 'dest' / f'backup-{NIGHT}.tar.gz'}\n"
    assert "step 'snapshot' was completed before" in err
    assert "attempt 1 of step 'upload' started and never finished" in err
    assert (tmp_path / "calls").read_text().splitlines() == ["tar -czf", "tar -tzf", "cp", "cp"]
    steps = steps_of(db, run)
    assert {name: (step["status"], step["attempt"]) for name, step in steps.items()} == {
        "snapshot": ("completed", 1),
        "verify": ("completed", 1),
        "upload": ("completed", 2),
        "prune": ("completed", 1),
    }
    assert sorted(os.listdir(tmp_path / "dest")) == [f"backup-{NIGHT}.tar.gz"]  # no .part, no staging left
    with tarfile.open(tmp_path / "dest" / f"backup-{NIGHT}.tar.gz") as archive:
        assert {"./a.txt", "./sub/b.txt"} <= set(archive.getnames())
    runs = json.loads(cli(db, "runs", "--name", "nightly-backup", "--json").stdout)["runs"]
    assert [(r["status"], r["output"]) for r in runs] == [("completed", {"archive": f"backup-{NIGHT}.tar.gz"})]

    third = _backup(tmp_path, db)  # the night's run is done: nothing is redone
    assert third.communicate(timeout=60)[0] == out and third.returncode == 0
    assert len((tmp_path / "calls").read_text().splitlines()) == 4
