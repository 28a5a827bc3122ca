"""How commands print: tables for people, JSON for scripts, and nothing that can drive a terminal.

On a terminal, tables are fitted to its width (long text cells end in …, ids and times stay whole, and
a table that still does not fit leaves out the columns its command names) and statuses are coloured,
unless NO_COLOR is set or --no-color is given; piped, every value is whole and nothing is coloured, so the
same command prints the same lines for a script (``--json`` is the stable format for scripts).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
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

    def write_styled(self, text: str, sgr: str) -> int:
        """``text`` made printable, in a style of this module's own (an SGR code from ``_STYLES``)."""
        return self._stream.write(f"\x1b[{sgr}m{printable(text)}\x1b[0m")

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


@dataclass
class _Terminal:
    """How this command's output reads: set once by ``configure`` (piped: nothing fitted, no colour)."""

    colour: bool = False
    width: int | None = None


TERMINAL = _Terminal()
# SGR codes: a status by how it stands (green done, red failed, yellow waiting ...), and headers in bold.
_STYLES = {
    "completed": "32",
    "failed": "31",
    "cancelled": "2",
    "running": "36",
    "waiting": "33",
    "queued": "34",
    "pending": "33",
    "allowed": "32",
    "denied": "31",
    "enabled": "32",
    "paused": "33",
    "header": "1",
}
_STYLED_COLUMNS = {"STATUS", "STATE"}
_MIN_CELL = 10  # a fitted column keeps at least this many characters
# Columns never cut to fit: an id cut short names no run, a time cut short says no time.
_WHOLE_COLUMNS = {
    "RUN",
    "CHILDREN",
    "PARENT",
    "APPROVAL",
    "EVENT",
    "SEQ",
    "STATUS",
    "STATE",
    "ATTEMPT",
    "COST",
    "CREATED",
    "UPDATED",
    "ENDED",
    "AT",
    "UNTIL",
    "RECEIVED",
    "REQUESTED",
    "LAST FIRED",
    "NEXT DUE",
}


def configure(*, no_color: bool, environ: Mapping[str, str]) -> None:
    """Fit and colour only for a person at a terminal; NO_COLOR (any value but empty) or --no-color
    turn the colours off (https://no-color.org)."""
    terminal = sys.stdout.isatty()
    TERMINAL.colour = terminal and not no_color and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"
    TERMINAL.width = shutil.get_terminal_size().columns if terminal else None


def on_terminal() -> bool:
    """Whether output goes to a person's terminal (else a pipe or a file: a script reads it)."""
    return TERMINAL.width is not None


def styled(text: str, style: str) -> None:
    """Print ``text`` (no newline) in ``style`` (a key of _STYLES) where colours are on, else plain."""
    sgr = _STYLES.get(style)
    if TERMINAL.colour and sgr and isinstance(sys.stdout, _PrintableStream):
        sys.stdout.write_styled(text, sgr)
    else:
        sys.stdout.write(text)


def print_json(result: BaseModel) -> int:
    """The result as ``--json`` prints it; returns the exit code, 0."""
    print(result.model_dump_json(indent=2))
    return 0


def print_table(
    headers: list[str],
    rows: list[list[Any]],
    empty: str = "no runs",
    next_cursor: str | None = None,
    *,
    drop: Sequence[str] = (),
) -> None:
    """Columns as wide as their widest cell; ``empty`` when there is no row; the next page's cursor, if any.
    ``drop``: the columns a terminal too narrow for the table leaves out, first the first."""
    if not rows:
        print(empty)
    else:
        cells = [[_one_line(str(cell)) for cell in row] for row in rows]
        widths = [max(len(headers[i]), *(len(row[i]) for row in cells)) for i in range(len(headers))]
        if TERMINAL.width is not None:
            kept, widths = _fitted(headers, widths, TERMINAL.width, drop)
            headers = [headers[i] for i in kept]
            cells = [[row[i] for i in kept] for row in cells]
        _print_row(headers, widths, ["header"] * len(headers))
        styles = [h if h in _STYLED_COLUMNS else "" for h in headers]
        for row in cells:
            _print_row(row, widths, styles)
    if next_cursor:
        print(f"\nmore: --cursor {next_cursor}")


def print_fields(rows: list[tuple[str, Any]]) -> None:
    """``label: value`` lines, values aligned; a row with no value is left out; a status coloured."""
    for label, value in rows:
        if value:
            print(f"{label + ':':<11}", end="")
            styled(str(value), str(value).split(" ")[0] if label == "status" else "")
            print()


def _print_row(row: list[str], widths: list[int], styles: list[str]) -> None:
    """One table row: each cell padded (or cut, with …) to its column's width; the last one unpadded."""
    last = max((i for i, cell in enumerate(row) if cell), default=0)  # no trailing blanks
    for i, (cell, width, style) in enumerate(zip(row[: last + 1], widths, styles, strict=False)):
        text = cell if len(cell) <= width else cell[: width - 1] + "…"
        styled(text, style.lower() if style == "header" else (text.split(" ")[0] if style else ""))
        if i < last:
            sys.stdout.write(" " * (width - len(text) + 2))
    print()


def _fitted(headers: list[str], widths: list[int], room: int, drop: Sequence[str]) -> tuple[list[int], list[int]]:
    """The columns kept and their widths, to fit a terminal ``room`` characters wide: the widest text
    columns give way first, none below _MIN_CELL, ids and times (_WHOLE_COLUMNS) never; then the
    ``drop`` columns go, in order. A table that cannot fit even so is left wider (the terminal wraps it)."""
    kept = list(range(len(headers)))
    for leave_out in [None, *drop]:
        if leave_out in headers:
            kept.remove(headers.index(leave_out))
        fitted = {i: widths[i] for i in kept}
        shrinkable = [i for i in kept if headers[i] not in _WHOLE_COLUMNS]
        while sum(fitted.values()) + 2 * (len(fitted) - 1) > room and shrinkable:
            widest = max(shrinkable, key=fitted.__getitem__)
            if fitted[widest] <= _MIN_CELL:
                break
            fitted[widest] -= 1
        if sum(fitted.values()) + 2 * (len(fitted) - 1) <= room:
            break
    return kept, [fitted[i] for i in kept]


def _one_line(text: str) -> str:
    """A table cell stays on its row: a stored newline or tab cannot forge another."""
    return text.replace("\n", "\\n").replace("\t", "\\t")


when = partial(views.when, terminal=True)  # the terminal's way: UTC times end in Z
brief = partial(views.brief, terminal=True)  # and a missing value reads null
