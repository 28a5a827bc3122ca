"""What the run list, events and schedules pages show in a cell: times, durations, a schedule's action.

A time is a ``<time>`` element: the server writes the absolute UTC time with its zone ("2026-12-01
09:00:00 UTC"), the same for every viewer, so a page's fingerprint does not move with the clock; the
script shows it as "3 min ago" or "in 2 h", with the time in the viewer's own zone on hover, and again
after each live swap of <main>.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape


def time_element(value: datetime | None, *, elapsed: bool = False, text: str | None = None) -> Markup:
    """``<time datetime='<ISO 8601 UTC>'>YYYY-MM-DD HH:MM:SS UTC</time>``, or nothing for no time.
    ``elapsed``: the script shows how long it has been, without 'ago' (a live run's duration so far), each
    second. ``text``: shown as it is (an offset on a timeline's axis); the script only adds the time, in the
    viewer's zone, on hover."""
    if value is None:
        return Markup("")
    utc = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    # To the millisecond where the text is a moment's offset on an axis, else to the second.
    stamp = utc.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if text is not None else utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    shown = utc.strftime("%Y-%m-%d %H:%M:%S UTC") if text is None else text
    kind = " data-elapsed" if elapsed else " data-keep" if text is not None else ""
    return Markup(f"<time datetime='{escape(stamp)}'{kind}>{escape(shown)}</time>")


def lasted(seconds: float) -> str:
    """A length of time as a person reads it: '340 ms', '4.2 s', '42 s', '3 min 5 s', '2 h 4 min', '3 d 4 h'.
    The script's ``lasted`` (dashboard.js) writes the same, for what still goes on."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    for unit, size, smaller, small_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if whole >= size:
            rest = (whole % size) // small_size
            return f"{whole // size} {unit}" + (f" {rest} {smaller}" if rest else "")
    return f"{whole} s"


def span(started: datetime, ended: datetime | None) -> Markup:
    """How long something took (``lasted``); while it goes on (no end), a time element counting from its
    start (the text changes in the browser, not in the page, so a live stream stays quiet)."""
    if ended is None:
        return time_element(started, elapsed=True)
    return Markup(escape(lasted((ended - started).total_seconds())))


def action_words(action: Any) -> tuple[str, str, Any]:
    """What a schedule's action does, as (verb, what, data): ('spawn', the agent profile, the prompt)
    or ('send', the event name, its data). An action stored under older rules may be a plain dict."""
    fields = action if isinstance(action, dict) else action.model_dump()
    if fields.get("type") == "send_event":
        return "send event", str(fields.get("name") or ""), fields.get("data")
    agent = fields.get("agent") or "the default agent"
    return f"spawn {agent}", str(fields.get("name") or ""), fields.get("prompt")
