"""How commands print: tables for people, JSON for scripts, and nothing that can drive a terminal."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from functools import partial
from typing import Any, TextIO

from pydantic import BaseModel

from .. import views

# Stored text (run names, outputs, errors, event data, logs) reaches a terminal: every control
# character but newline and tab, C1 controls, bidirectional overrides and lone surrogates are
# shown as \u escapes (ESC as \u001b), so none can clear the screen, set the window title, write the clipboard
# (OSC 52) or reorder what is shown. The escape is valid inside JSON strings, so --json stays JSON.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` safe for a terminal: each control character made visible as a ``\\u`` escape (ESC as ``\\u001b``)."""
    return _UNPRINTABLE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


class _PrintableStream:
    """A text stream that passes everything written through ``printable``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(printable(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def printable_std_streams() -> Iterator[None]:
    """Every print of every command goes through ``printable``: the one place output is made safe."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _PrintableStream(sys.stdout), _PrintableStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def print_json(result: BaseModel) -> int:
    """The result as ``--json`` prints it; returns the exit code, 0."""
    print(result.model_dump_json(indent=2))
    return 0


def print_table(
    headers: list[str], rows: list[list[Any]], empty: str = "no runs", next_cursor: str | None = None
) -> None:
    """Columns as wide as their widest cell; ``empty`` when there is no row; the next page's cursor, if any."""
    if not rows:
        print(empty)
    else:
        cells = [[_one_line(str(cell)) for cell in row] for row in rows]
        widths = [max(len(headers[i]), *(len(row[i]) for row in cells)) for i in range(len(headers))]
        for row in [headers, *cells]:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if next_cursor:
        print(f"\nmore: --cursor {next_cursor}")


def print_fields(rows: list[tuple[str, Any]]) -> None:
    """``label: value`` lines, values aligned; a row with no value is left out."""
    for label, value in rows:
        if value:
            print(f"{label + ':':<11}{value}")


def _one_line(text: str) -> str:
    """A table cell stays on its row: a stored newline or tab cannot forge another."""
    return text.replace("\n", "\\n").replace("\t", "\\t")


when = partial(views.when, terminal=True)  # the terminal's way: UTC times end in Z
brief = partial(views.brief, terminal=True)  # and a missing value reads null
