"""A spawn request made into its run and its process record, checked, before anything is written.

Shared by ``spawn_subagent`` and by schedules whose action spawns, so that both refuse the same
things, and a schedule refuses them when it is created rather than each time it fires.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import NamedTuple

from ..errors import InvalidInput
from ..models import Agent, AgentState, RetryPolicy, Run, SpawnSubagentInput, StartRunInput
from ..profiles import (
    NUL,
    AgentProfile,
    AgentsConfig,
    account_of,
    check_launchable,
    executable,
    harness_missing,
    profile_path,
)
from .context import Context


class Prepared(NamedTuple):
    """A spawn made into what ``transitions.queue_agent`` writes."""

    run_args: StartRunInput
    agent: Agent
    max_turns: int | None


class Spawns:
    """Checks spawn requests against the agent profiles and limits of ``config``."""

    def __init__(self, context: Context, config: AgentsConfig) -> None:
        self.context = context
        self.config = config

    def profile_for(self, args: SpawnSubagentInput) -> tuple[str, AgentProfile]:
        """The profile ``args`` names (or the default), checked against ``args.command``."""
        name = args.agent or self.config.default_agent
        profile = self.config.profile(name)
        if not profile.command and not args.command:
            raise InvalidInput(f"agent {name!r} runs the argv given as command, e.g. command=['./agent.sh']")
        if profile.command and args.command:
            raise InvalidInput(
                f"command is for agent='command' only; agent {name!r} has its own command in its profile"
            )
        return name, profile

    def prepare(self, args: SpawnSubagentInput, parent: Run | None, run_id: str) -> Prepared:
        """Check a spawn's arguments and build its run and its process record (nothing is written). Its
        budget is the spawn's, else its profile's, else the config's default."""
        profile_name, profile = self.profile_for(args)
        if args.parent_run_id and parent is None:
            raise InvalidInput(f"parent_run_id {args.parent_run_id!r} names no run; pass an existing run's id")
        cwd = _directory(args.cwd or (parent.workspace if parent else None) or self.context.workspace or ".")
        # What exec would refuse is refused here, whatever the faces' own models let through.
        check_launchable(
            profile_name, profile, args.command or [], {"prompt": args.prompt, "task": args.prompt, "cwd": cwd}
        )
        self.context.check_payload("prompt", args.prompt)
        program = executable(profile, args.command or [])
        if program is not None and (missing := harness_missing(profile_name, program, cwd, profile_path(profile))):
            raise InvalidInput(missing, field="agent" if profile.command else "command")
        agent = Agent(
            run_id=run_id,
            profile=profile_name,
            account=account_of(profile_name, profile),
            prompt=args.prompt,
            cwd=cwd,
            command=args.command or [],
            concurrency_key=args.concurrency_key,
            concurrency_limit=args.concurrency_limit,
            max_attempts=args.max_attempts or profile.max_attempts,
            timeout_s=args.timeout_s or profile.timeout_s,
            state=AgentState.QUEUED,
        )
        run_args = StartRunInput(
            name=args.name or f"subagent:{profile_name}",
            input={"agent": profile_name, "prompt": args.prompt},
            key=args.key,
            parent_run_id=args.parent_run_id,
            labels=args.labels,
            workspace=cwd,
            retry=self._retry_policy(agent.max_attempts),
            max_budget_usd=args.max_budget_usd or profile.max_budget_usd or self.config.max_budget_usd,
        )
        return Prepared(run_args, agent, args.max_turns or profile.max_turns or self.config.max_turns)

    def _retry_policy(self, max_attempts: int) -> RetryPolicy:
        backoff = self.config.retry_backoff_s
        return RetryPolicy(max_attempts=max_attempts, initial_backoff_s=backoff, max_backoff_s=max(backoff, 300.0))


CWD_HINT = "give the path of an existing directory for the sub-agent to work in"


def _directory(path: str) -> str:
    """``path`` resolved to an existing directory; anything else is refused naming the cwd and why."""
    if NUL in path:
        raise InvalidInput(
            f"cwd {path!r:.200} holds a NUL character (\\x00), which no path can; {CWD_HINT}", field="cwd"
        )
    try:
        resolved = Path(path).expanduser().resolve(strict=True)
    except RuntimeError as exc:  # Python 3.11 raises it for a symlink loop, and for ~user naming no user
        problem = "is a symbolic link loop" if "loop" in str(exc) else "starts with ~ but names no home directory"
        raise InvalidInput(f"cwd {path!r:.200} {problem}; {CWD_HINT}", field="cwd") from None
    except FileNotFoundError:
        raise InvalidInput(f"cwd {path!r:.200} is not an existing directory; {CWD_HINT}", field="cwd") from None
    except OSError as exc:
        raise InvalidInput(
            f"cwd {path!r:.200} cannot be used: {_path_problem(path, exc)}; {CWD_HINT}", field="cwd"
        ) from None
    if not resolved.is_dir():
        raise InvalidInput(f"cwd {path!r:.200} is not an existing directory; {CWD_HINT}", field="cwd")
    return str(resolved)


def _path_problem(path: str, exc: OSError) -> str:
    """What is wrong with a path the file system refused, in words a caller can act on."""
    if exc.errno == errno.ENAMETOOLONG:
        longest = max(Path(path).parts, key=lambda part: len(os.fsencode(part)))
        return (
            f"too long for the file system (its longest component is {len(os.fsencode(longest))} bytes, "
            f"the limit is usually 255; the whole path is {len(os.fsencode(path))} bytes, the limit is usually 4096)"
        )
    if exc.errno == errno.ELOOP:
        return "it is a symbolic link loop"
    return exc.strerror or str(exc)
