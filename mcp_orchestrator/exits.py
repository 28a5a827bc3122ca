"""How every command ends when its output cannot be written or it is interrupted: the exit codes a
shell would report, and never a traceback. Shared by the fast console entry and the full command line."""

from __future__ import annotations

import os
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a program stopped with Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a program whose reader went away


def unwritable(exc: OSError) -> int:
    """The exit code once stdout failed: 141, quietly, when the reader went away (``| head``), as a shell
    does on SIGPIPE; else (a full disk, ``>/dev/full``) 1, saying why on stderr. What is still buffered
    goes nowhere, so the interpreter's own flush at exit does not fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if isinstance(exc, BrokenPipeError):
        return EXIT_BROKEN_PIPE
    print(
        f"config_error: the output could not be written ({exc.strerror or exc}); check where it goes", file=sys.stderr
    )
    return 1
