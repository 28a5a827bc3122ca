"""Hostile input at the models and the engine: odd match paths, deep JSON, NUL and lone surrogates,
times and cursors out of range, crons that never fire, zones that are directories, unsafe schedule
names. Each is refused with an error naming the field, the value and what to do, the same on both
stores, and nothing a caller stored can make another caller's call fail."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from pydantic import BaseModel, ValidationError

from mcp_orchestrator.errors import InvalidInput, invalid_input_from
from mcp_orchestrator.models import (
    JSON_DEPTH_MAX,
    CancelOn,
    CheckpointInput,
    FinishRunInput,
    ListEventsInput,
    ListRunsInput,
    ListSchedulesInput,
    ScheduleInput,
    SendEventAction,
    SendEventInput,
    SleepInput,
    SpawnSubagentInput,
    StartRunInput,
    StatusInput,
    UnscheduleInput,
    WaitForEventInput,
)
from mcp_orchestrator.runtime import Engine

from .support import Clock, call, http_token, open_store, stdio_server

pytestmark = pytest.mark.anyio

TICK = {"type": "send_event", "name": "tick"}


def nested(depth: int, leaf: Any = "leaf") -> Any:
    """``depth`` arrays and objects inside each other (alternating), ``leaf`` innermost."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def refusal(model: type[BaseModel], fields: dict[str, Any]) -> str:
    """The invalid_input message the faces show for these fields."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(fields)
    return f"{InvalidInput.code}: {invalid_input_from(caught.value).message}"


async def started(engine: Engine, name: str = "task") -> str:
    return (await engine.runs.start_run(StartRunInput(name=name))).run.run_id


# Finding 6: match paths.


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("data.²", "has the part '²', which looks like a list index but is not one; a list index is 1 to 9 ASCII"),
        ("data.٣", "looks like a list index but is not one"),
        ("data." + "1" * 4301, "a match path is at most 1000 characters"),
        ("data.1234567890", "looks like a list index but is not one"),
        ("data..pr", "has an empty part; write parts joined by single dots"),
        ("data.", "has an empty part"),
        (".".join(["a"] * 70), "at most 65 dotted parts; this one has 70"),
        ("data.p\x00r", "NUL character"),
    ],
)
def test_a_match_path_is_checked_when_the_wait_is_made(path: str, problem: str) -> None:
    wait = {"run_id": "r", "step": "s", "event": "ping", "match": {path: 1}}
    message = refusal(WaitForEventInput, wait)
    assert message.startswith("invalid_input: invalid arguments: match.") and problem in message, message
    cancel_on = {"name": "x", "cancel_on": [{"event": "ping", "match": {path: 1}}]}
    assert problem in refusal(StartRunInput, cancel_on)


def test_good_match_paths_are_accepted() -> None:
    for path in ("data.pr", "data.items.0.id", "data.123456789", "name", "data.-1", "data.ünïcode key"):
        WaitForEventInput(run_id="r", step="s", event="ping", match={path: 1})


async def test_a_wait_stored_with_an_odd_path_never_stops_an_event(engine: Engine) -> None:
    """Waits and cancel triggers stored before paths were checked (as an older release let them be)
    match nothing; the event is stored and every other waiter is woken."""
    old_waiter, innocent = await started(engine), await started(engine)
    for path in ("data.²", "data." + "1" * 4400):  # model_construct skips the checks, as old rows did
        unchecked = WaitForEventInput.model_construct(
            run_id=old_waiter, step=f"old-{len(path)}", event="ping", match={path: 1}, timeout_s=None, block_s=0
        )
        assert (await engine.events.wait_for_event(unchecked)).status == "waiting"
    trigger = CancelOn.model_construct(event="ping", match={"data.²": 1})
    old_cancel = (
        await engine.runs.start_run(StartRunInput.model_construct(name="old", cancel_on=[trigger]))
    ).run.run_id
    waiting = WaitForEventInput(run_id=innocent, step="ping", event="ping", match={"data.0": 1}, block_s=0)
    assert (await engine.events.wait_for_event(waiting)).status == "waiting"

    sent = await engine.events.send_event(SendEventInput(name="ping", data=[1, 2, 3]))

    assert sent.woken_run_ids == [innocent] and sent.cancelled_run_ids == []
    assert (await engine.events.wait_for_event(waiting)).event.event_id == sent.event_id
    assert (await engine.runs.status(StatusInput(run_id=old_waiter))).run.status == "waiting"
    assert (await engine.runs.status(StatusInput(run_id=old_cancel))).run.status == "running"


# Finding 7: one depth limit on every JSON value.

JSON_FIELDS: list[tuple[type[BaseModel], dict[str, Any], str]] = [
    (StartRunInput, {"name": "x"}, "input"),
    (CheckpointInput, {"run_id": "r", "step": "s"}, "output"),
    (CheckpointInput, {"run_id": "r", "step": "s"}, "error"),
    (FinishRunInput, {"run_id": "r"}, "output"),
    (FinishRunInput, {"run_id": "r"}, "error"),
    (SendEventInput, {"name": "e"}, "data"),
]


@pytest.mark.parametrize(("model", "base", "field"), JSON_FIELDS)
def test_json_deeper_than_the_limit_is_refused_in_every_field(
    model: type[BaseModel], base: dict[str, Any], field: str
) -> None:
    model.model_validate({**base, field: nested(JSON_DEPTH_MAX)})
    for depth in (JSON_DEPTH_MAX + 1, 250, 100_000):
        message = refusal(model, {**base, field: nested(depth)})
        assert message.startswith(f"invalid_input: invalid arguments: {field}: nests arrays and objects more than 64")
        assert "levels deep; flatten it, or store the data in a file" in message


def test_the_depth_limit_holds_in_match_values_and_schedule_actions() -> None:
    deep = nested(JSON_DEPTH_MAX + 1)
    assert "match.data.pr: nests arrays and objects more than 64 levels" in refusal(
        WaitForEventInput, {"run_id": "r", "step": "s", "event": "e", "match": {"data.pr": deep}}
    )
    assert "cancel_on.0.match.data: nests arrays" in refusal(
        StartRunInput, {"name": "x", "cancel_on": [{"event": "e", "match": {"data": deep}}]}
    )
    action = {**TICK, "data": deep}
    assert "action.send_event.data: nests arrays" in refusal(
        ScheduleInput, {"name": "s", "every_s": 5, "action": action}
    )


async def test_data_at_the_depth_limit_is_kept_and_read_back(engine: Engine) -> None:
    data = nested(JSON_DEPTH_MAX, leaf="\x00 bottom")  # a NUL inside JSON data is kept by both stores
    run_id = await started(engine)
    waiting = WaitForEventInput(run_id=run_id, step="deep", event="deep", block_s=0)
    await engine.events.wait_for_event(waiting)
    sent = await engine.events.send_event(SendEventInput(name="deep", data=data))
    await engine.runs.checkpoint(CheckpointInput(run_id=run_id, step="kept", output=data))

    status = await engine.runs.status(StatusInput(run_id=run_id))
    assert status.steps[0].output["event"]["data"] == data and status.steps[1].output == data
    listed = await engine.events.list_events(ListEventsInput(name="deep"))
    assert [(event.event_id, event.data) for event in listed.events] == [(sent.event_id, data)]
    assert (await engine.events.wait_for_event(waiting)).event.data == data  # and by key, through the memoized step


# Finding 9 and 4: text that neither store can hold alike is refused in every text field.

TEXT_FIELDS: list[tuple[type[BaseModel], dict[str, Any], str, Any]] = [
    (StartRunInput, {}, "name", "{}"),
    (StartRunInput, {"name": "x"}, "key", "{}"),
    (StartRunInput, {"name": "x"}, "workspace", "{}"),
    (StartRunInput, {"name": "x"}, "labels", {"team": "{}"}),
    (StartRunInput, {"name": "x"}, "cancel_on", [{"event": "{}"}]),
    (CheckpointInput, {"run_id": "r"}, "step", "{}"),
    (CheckpointInput, {"step": "s"}, "run_id", "{}"),
    (SendEventInput, {}, "name", "{}"),
    (SendEventInput, {"name": "e"}, "id", "{}"),
    (WaitForEventInput, {"run_id": "r", "step": "s"}, "event", ["ok", "{}"]),
    (SpawnSubagentInput, {}, "prompt", "do {}"),
    (SpawnSubagentInput, {"prompt": "p"}, "command", ["./agent", "{}"]),
    (SpawnSubagentInput, {"prompt": "p"}, "cwd", "/tmp/{}"),
    (SpawnSubagentInput, {"prompt": "p"}, "concurrency_key", "{}"),
    (ListRunsInput, {}, "label", "team={}"),
    (ListRunsInput, {}, "name", "{}"),
    (ScheduleInput, {"name": "s", "every_s": 5}, "action", {**TICK, "name": "{}"}),
    (ScheduleInput, {"name": "s", "cron": "* * * * *", "action": TICK}, "timezone", "Europe/{}"),
    (UnscheduleInput, {}, "name", "{}"),
]


@pytest.mark.parametrize(("model", "base", "field", "template"), TEXT_FIELDS)
@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("a\x00b", "holds a NUL character (U+0000), which the stores cannot keep in text; remove it"),
        ("a\ud800b", "holds a lone surrogate ('\\ud800' at position "),
    ],
)
def test_nul_and_lone_surrogates_are_refused_in_text(
    model: type[BaseModel], base: dict[str, Any], field: str, template: Any, bad: str, problem: str
) -> None:
    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.format(bad)
        if isinstance(value, list):
            return [fill(item) for item in value]
        return {key: fill(item) for key, item in value.items()}

    message = refusal(model, {**base, field: fill(template)})
    assert f": {field}" in message or f" {field}." in message, message
    assert problem in message, message


def test_json_data_may_hold_a_nul_but_no_lone_surrogate() -> None:
    SendEventInput(name="e", data={"text": "a\x00b", "a\x00": 1})
    message = refusal(SendEventInput, {"name": "e", "data": {"text": ["a\udfffb"]}})
    assert "data: a string holds a lone surrogate ('\\udfff' at position 1)" in message
    assert "key 'x\\ud800' holds a lone surrogate" in refusal(SendEventInput, {"name": "e", "data": {"x\ud800": 1}})


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (float("nan"), "holds nan, which JSON cannot carry; send a finite number"),
        ([float("-inf")], "holds -inf, which JSON cannot carry"),
        (10**5000, "holds an integer of more than 4300 digits; send it as a string"),
    ],
    ids=["nan", "-inf", "huge-int"],
)
def test_numbers_json_cannot_carry_are_refused(value: Any, problem: str) -> None:
    message = refusal(WaitForEventInput, {"run_id": "r", "step": "s", "event": "e", "match": {"data.n": value}})
    assert "match.data.n: " + problem in message and "(got " in message


# Finding 9: times, cursors, crons and zones.


EVENTUAL = "0001-01-02 and 9999-12-30"  # a time something happens at keeps a day from the calendar's ends
FILTER = "0001-01-01 and 9999-12-31"


@pytest.mark.parametrize(
    ("model", "fields", "field", "bounds"),
    [
        (ScheduleInput, {"name": "s", "action": TICK, "at": "9999-12-31T23:00:00-05:00"}, "at", EVENTUAL),
        (ScheduleInput, {"name": "s", "action": TICK, "at": "0001-01-01T00:00:00+05:00"}, "at", EVENTUAL),
        (SleepInput, {"run_id": "r", "step": "s", "until": "9999-12-31T23:00:00-05:00"}, "until", EVENTUAL),
        (SleepInput, {"run_id": "r", "step": "s", "until": "0001-01-01T00:00:00+05:00"}, "until", EVENTUAL),
        (SleepInput, {"run_id": "r", "step": "s", "until": "9999-12-31T23:59:59Z"}, "until", EVENTUAL),
        (ListRunsInput, {"since": "0001-01-01T00:00:00+05:00"}, "since", FILTER),
        (ListRunsInput, {"since": "9999-12-31T23:00:00-05:00"}, "since", FILTER),
    ],
)
def test_times_out_of_range_are_refused(
    model: type[BaseModel], fields: dict[str, Any], field: str, bounds: str
) -> None:
    message = refusal(model, fields)
    assert message.startswith(f"invalid_input: invalid arguments: {field}: {fields[field][:19]}"), message
    assert f"is out of range; give a time between {bounds} in UTC, e.g. 2026-01-01T09:00:00Z" in message
    ListRunsInput(since="0001-01-01T00:00:00Z")  # from the start: a filter may use the whole calendar


async def test_a_filter_from_the_start_of_the_calendar_works_on_both_stores(engine: Engine) -> None:
    run_id = await started(engine)
    listed = await engine.runs.list_runs(ListRunsInput(since="0001-01-01T00:00:00Z"))
    assert [run.run_id for run in listed.runs] == [run_id]
    assert (await engine.runs.list_runs(ListRunsInput(since="9999-12-31T23:59:59Z"))).runs == []


def test_durations_that_would_overflow_are_refused() -> None:
    for model, fields in [
        (StartRunInput, {"name": "x", "timeout_s": 1e300}),
        (SleepInput, {"run_id": "r", "step": "s", "seconds": 1e300}),
        (WaitForEventInput, {"run_id": "r", "step": "s", "event": "e", "timeout_s": 1e300}),
        (ScheduleInput, {"name": "s", "action": TICK, "every_s": 1e300}),
    ]:
        assert "less than or equal to" in refusal(model, fields)


async def test_an_event_cursor_out_of_range_is_invalid_input(engine: Engine) -> None:
    await engine.events.send_event(SendEventInput(name="e"))
    for cursor in ("9" * 20, str(2**63), "1_000", " 5", "-1", "0x10", "٣"):
        with pytest.raises(InvalidInput, match="is not a next_cursor a listing printed; pass next_cursor as it was"):
            await engine.events.list_events(ListEventsInput(cursor=cursor))
    assert (await engine.events.list_events(ListEventsInput(cursor=str(2**63 - 1)))).events != []


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"cron": "0 0 31 2 *"}, "cron: '0 0 31 2 *' never fires: no date in the coming years matches it"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"cron": "0 0 31 4,6,9,11 *"}, "never fires"),
        ({"cron": "0 9 * * *", "timezone": "America"}, "timezone: 'America' is not an IANA time zone; use a name"),
        ({"cron": "0 9 * * *", "timezone": "Etc"}, "timezone: 'Etc' is not an IANA time zone"),
        ({"cron": "0 9 * * *", "timezone": "tzdata.zi"}, "timezone: 'tzdata.zi' is not an IANA time zone"),
    ],
)
async def test_crons_that_never_fire_and_zones_that_are_directories_are_refused(
    engine: Engine, fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidInput, match=problem.replace("*", r"\*")):
        await engine.schedules.schedule(ScheduleInput.model_validate({"name": "s", "action": TICK, **fields}))
    assert (await engine.schedules.list(ListSchedulesInput())).schedules == []


# Finding 13: schedule names.


def test_schedule_names_keep_to_a_safe_alphabet() -> None:
    for name in ("beat", "check-deploy", "cancel_previous", "team.nightly", "v2:deploy", "s00001", "A" * 128):
        ScheduleInput(name=name, every_s=5, action=TICK)
    bad = ("team/nightly", "../runs/X/cancel#", "a..b", "a?b", "a#b", "has space", "-x", ".hidden", "", "A" * 129)
    for name in bad:
        message = refusal(ScheduleInput, {"name": name, "every_s": 5, "action": TICK})
        assert f"name: {name!r:.140} is not a schedule name: use 1 to 128 letters, digits and . _ : -" in message, name
    schema = ScheduleInput.model_json_schema()["properties"]["name"]
    assert schema["pattern"] == "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$" and "Letters, digits" in schema["description"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_a_schedule_stored_under_older_rules_can_be_listed_paused_fired_and_removed(
    db: str, clock: Clock
) -> None:
    """Rows an older release stored (a name with '/', data deeper than the limit) stay readable: the
    schedule is listed, paused and removed by its exact name, and a firing is recorded as failed."""
    legacy, deep = "team/nightly ../x?#", "deep"
    async with open_store(db) as store:
        engine = Engine(store, clock=clock)
        for name, action in ((legacy, TICK), (deep, {**TICK, "data": nested(JSON_DEPTH_MAX + 10)})):
            args = ScheduleInput(name="placeholder", every_s=10, action=SendEventAction(type="send_event", name="t"))
            unchecked = SendEventAction.model_construct(**action)
            await engine.schedules.schedule(args.model_copy(update={"name": name, "action": unchecked}))
        listed = (await engine.schedules.list(ListSchedulesInput())).schedules
        assert sorted(s.name for s in listed) == [deep, legacy]

        clock.advance(10)
        assert await engine.schedules.fire_due(grace_s=60) == 2
        (firing,) = await engine.schedules.history(deep)
        assert firing.outcome == "failed" and firing.detail is not None
        assert firing.detail.startswith("invalid_input: invalid action: data: nests arrays and objects more than 64")
        assert (await engine.schedules.history(legacy))[0].outcome == "sent"

        assert (await engine.schedules.set_enabled(legacy, False)).enabled is False
        for name in (legacy, deep):
            assert (await engine.schedules.unschedule(UnscheduleInput(name=name))).schedule.name == name
        assert (await engine.schedules.list(ListSchedulesInput())).schedules == []


# The faces: what an MCP client over stdio and an HTTP client see.


@pytest.mark.processes
async def test_an_mcp_client_gets_specific_errors_and_the_event_name_keeps_working(db: str) -> None:
    async with Client(stdio_server(db)) as client:
        run_id = (await call(client, "start_run", name="waiter"))["run"]["run_id"]
        bad_calls: list[tuple[str, dict[str, Any], str]] = [
            ("wait_for_event", {"run_id": run_id, "step": "w", "event": "ping", "match": {"data.²": 1}}, "list index"),
            ("send_event", {"name": "ping", "data": nested(JSON_DEPTH_MAX + 1)}, "more than 64 levels deep"),
            ("start_run", {"name": "a\x00b"}, "NUL character"),
            ("schedule", {"name": "s", "cron": "0 0 31 2 *", "action": TICK}, "never fires"),
            ("schedule", {"name": "s", "cron": "0 9 * * *", "timezone": "America", "action": TICK}, "IANA"),
            ("schedule", {"name": "team/nightly", "every_s": 5, "action": TICK}, "is not a schedule name"),
            ("sleep", {"run_id": run_id, "step": "z", "until": "9999-12-31T23:00:00-05:00"}, "out of range"),
            ("list_runs", {"since": "0001-01-01T00:00:00+05:00"}, "out of range"),
        ]
        for tool, arguments, expected in bad_calls:
            result = await client.call_tool(tool, arguments)
            text = result.content[0].text
            assert result.is_error and expected in text, f"{tool}: {text}"
            assert text.strip() != f"Error executing tool {tool}"
        deep = nested(JSON_DEPTH_MAX)
        waiting = await call(client, "wait_for_event", run_id=run_id, step="w", event="ping", block_s=0)
        assert waiting["status"] == "waiting"
        sent = await call(client, "send_event", name="ping", data=deep)
        assert sent["woken_run_ids"] == [run_id]
        status = await call(client, "status", run_id=run_id)
        assert status["steps"][0]["output"]["event"]["data"] == deep


@pytest.mark.processes
async def test_the_http_api_answers_out_of_range_queries_with_400(
    http_server: Callable[..., str], private_state_dir: Path
) -> None:
    base = http_server()
    headers = {"Authorization": f"Bearer {http_token(private_state_dir)}"}
    async with httpx2.AsyncClient(base_url=base, headers=headers) as api:
        for path, params, expected in [
            ("/api/events", {"cursor": "9" * 20}, "cursor: '99999999999999999999' is not a next_cursor"),
            ("/api/runs", {"since": "0001-01-01T00:00:00+05:00"}, "since: 0001-01-01T00:00:00+05:00 is out of range"),
            ("/api/runs", {"since": "99999-01-01T00:00:00Z"}, "since: "),
            ("/api/runs", {"name": "a\x00b"}, "name: holds a NUL character"),
            ("/api/runs/" + "R" * 65, {}, "run_id: String should have at most 64 characters"),
        ]:
            response = await api.get(path, params=params)
            assert response.status_code == 400, (path, response.text)
            assert response.json()["error"] == "invalid_input" and expected in response.json()["message"], path
