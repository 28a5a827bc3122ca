"""The console script ``mcp-orchestrator``: ``--version`` and ``token`` answered at once, every other
command handed to ``cli.main``.

The full command line takes a few hundred milliseconds to import (each command's options come from
the pydantic input models, and the handlers reach the engine). These two are asked for by scripts
and shell prompts (``--header "Authorization: Bearer $(mcp-orchestrator token)"``) and need none of
it: the token is a file in the state directory, whatever the store. Any other form of them
(``token --help``, ``token --db ...``) and any failure take the full way, so help and errors read as
every command's. Output that cannot be written, and Ctrl-C, end every command alike (``unwritable``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from . import __version__
from .exits import EXIT_INTERRUPTED, unwritable


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args == ["--version"]:
            return _printed(f"mcp-orchestrator {__version__}")
        if args == ["token"] and (token := _token()) is not None:
            return _printed(token)
        from .cli import main as full

        return full(args)
    except KeyboardInterrupt:  # while a module loads, before any command could catch it
        return EXIT_INTERRUPTED


def _printed(text: str) -> int:
    try:
        print(text)
        sys.stdout.flush()
    except OSError as exc:
        return unwritable(exc)
    return 0


def _token() -> str | None:
    """The token; None when it cannot be read or made (the full command then says why)."""
    from .paths import token_path
    from .tokens import load_or_create_token

    try:
        return load_or_create_token(token_path())
    except Exception:  # the full command reports it, as every command reports its errors
        return None
