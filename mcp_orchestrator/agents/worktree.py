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

from ..errors import InvalidInput


@dataclass(frozen=True)
class Worktree:
    repo: Path
    path: Path
    branch: str


def create(cwd: str, run_id: str) -> Worktree:
    top = Path(_git(cwd, "rev-parse", "--show-toplevel", purpose="find the repository of cwd"))
    common = Path(_git(str(top), "rev-parse", "--path-format=absolute", "--git-common-dir", purpose="find .git"))
    path = common / "mcp-orchestrator" / "worktrees" / run_id
    branch = f"mcp-orchestrator/{run_id}"
    _git(str(top), "worktree", "add", "--quiet", "-b", branch, str(path), "HEAD", purpose="create the worktree")
    return Worktree(repo=top, path=path, branch=branch)


def remove(tree: Worktree) -> None:
    _git(str(tree.repo), "worktree", "remove", "--force", str(tree.path), purpose="remove the worktree")
    _git(str(tree.repo), "branch", "-D", tree.branch, purpose="delete the worktree's branch")


def _git(cwd: str, *args: str, purpose: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise InvalidInput("worktree=true needs git on the PATH of the orchestrator") from None
    if done.returncode != 0:
        raise InvalidInput(
            f"worktree=true: could not {purpose} in {cwd} ({done.stderr.strip() or 'git failed'}); "
            "give a cwd inside a git repository with at least one commit, or leave worktree out"
        )
    return done.stdout.strip()
