"""Git worktrees for sub-agents that should not touch their parent's checkout.

A sub-agent spawned with ``worktree=true`` works in a new worktree on a new branch
``mcp-orchestrator/<run_id>``, made from the HEAD of the repository that holds its cwd. The
worktree lives inside that repository's git directory (``.git/mcp-orchestrator/worktrees/``), so it
never shows up as untracked files. It is kept when the run ends, since its branch holds the work:
merge or inspect it, then ``git worktree remove PATH`` and ``git branch -D BRANCH``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import anyio

from ..errors import InvalidInput

GIT_TIMEOUT_S = 60.0  # one git command; a hung git (a lock, a hook, a prompt) is killed after this


@dataclass(frozen=True)
class Worktree:
    repo: Path
    path: Path
    branch: str


async def create(cwd: str, run_id: str) -> Worktree:
    top = Path(await _git(cwd, "rev-parse", "--show-toplevel", purpose="find the repository of cwd"))
    common = Path(await _git(str(top), "rev-parse", "--path-format=absolute", "--git-common-dir", purpose="find .git"))
    path = common / "mcp-orchestrator" / "worktrees" / run_id
    branch = f"mcp-orchestrator/{run_id}"
    await _git(str(top), "worktree", "add", "--quiet", "-b", branch, str(path), "HEAD", purpose="create the worktree")
    return Worktree(repo=top, path=path, branch=branch)


async def remove(tree: Worktree) -> None:
    await _git(str(tree.repo), "worktree", "remove", "--force", str(tree.path), purpose="remove the worktree")
    await _git(str(tree.repo), "branch", "-D", tree.branch, purpose="delete the worktree's branch")


async def _git(cwd: str, *args: str, purpose: str) -> str:
    """Run one git command without blocking the event loop, so that a server's other clients go on
    meanwhile; a git that hangs is killed after GIT_TIMEOUT_S (and when the caller is cancelled)."""
    try:
        with anyio.fail_after(GIT_TIMEOUT_S):
            done = await anyio.run_process(["git", *args], cwd=cwd, stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise InvalidInput("worktree=true needs git on the PATH of the orchestrator") from None
    except TimeoutError:
        raise InvalidInput(
            f"worktree=true: git did not {purpose} in {cwd} within {GIT_TIMEOUT_S:.0f} s (a lock, a hook or a "
            "prompt waiting?); fix the repository and spawn again, or leave worktree out"
        ) from None
    if done.returncode != 0:
        problem = done.stderr.decode(errors="replace").strip() or "git failed"
        raise InvalidInput(
            f"worktree=true: could not {purpose} in {cwd} ({problem}); "
            "give a cwd inside a git repository with at least one commit, or leave worktree out"
        )
    return done.stdout.decode(errors="replace").strip()
