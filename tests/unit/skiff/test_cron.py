"""Cron schedules (skiff.cron): parsing, the next firing time, time zones and DST."""

from __future__ import annotations

import datetime as dt

import pytest

from skiff import cron


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def iso(seconds: float | None, zone: str = "UTC") -> str:
    assert seconds is not None
    return dt.datetime.fromtimestamp(seconds, cron.zone(zone)).strftime("%Y-%m-%d %H:%M %a")


@pytest.mark.parametrize(("schedule", "after", "want"), [
    ("* * * * *", "2026-03-04 10:20:30", "2026-03-04 10:21 Wed"),
    ("*/15 * * * *", "2026-03-04 10:20:00", "2026-03-04 10:30 Wed"),
    ("5 4 * * *", "2026-03-04 04:05:00", "2026-03-05 04:05 Thu"),  # strictly after
    ("0 0 1 * *", "2026-01-31 12:00:00", "2026-02-01 00:00 Sun"),
    ("30 2 * * MON-FRI", "2026-03-06 03:00:00", "2026-03-09 02:30 Mon"),  # Friday evening -> Monday
    ("0 12 * JAN,jul *", "2026-02-01 00:00:00", "2026-07-01 12:00 Wed"),
    ("0 0 29 2 *", "2026-03-01 00:00:00", "2028-02-29 00:00 Tue"),
    ("0 0 13 * 5", "2026-03-01 00:00:00", "2026-03-06 00:00 Fri"),  # both restricted: day 13 OR Friday
    ("0 0 * * 7", "2026-03-04 00:00:00", "2026-03-08 00:00 Sun"),  # 7 is Sunday
    ("10-20/5 1 * * *", "2026-03-04 01:12:00", "2026-03-04 01:15 Wed"),
    ("7/20 * * * *", "2026-03-04 01:48:00", "2026-03-04 02:07 Wed"),  # 7, 27, 47
    ("@hourly", "2026-03-04 01:00:00", "2026-03-04 02:00 Wed"),
    ("@weekly", "2026-03-04 01:00:00", "2026-03-08 00:00 Sun"),
    ("0 0 ? * *", "2026-03-04 01:00:00", "2026-03-05 00:00 Thu"),
], ids=["every-minute", "step", "strictly-after", "month-start", "weekdays", "month-names", "leap-day",
        "dom-or-dow", "sunday-7", "range-step", "start-step", "hourly", "weekly", "question-mark"])
def test_next_after_utc(schedule: str, after: str, want: str) -> None:
    assert iso(cron.parse(schedule).next_after(utc(after))) == want


@pytest.mark.parametrize(("schedule", "zone", "after", "want_local", "want_utc"), [
    ("0 9 * * *", "Europe/Berlin", "2026-01-10 09:00:00", "2026-01-11 09:00 Sun", "2026-01-11 08:00 Sun"),
    ("0 9 * * *", "Europe/Berlin", "2026-07-10 09:00:00", "2026-07-11 09:00 Sat", "2026-07-11 07:00 Sat"),
    # 02:30 does not exist on 2026-03-29 in Berlin (clocks jump 02:00 -> 03:00): that day is skipped.
    ("30 2 * * *", "Europe/Berlin", "2026-03-28 02:00:00", "2026-03-30 02:30 Mon", "2026-03-30 00:30 Mon"),
    # 02:30 happens twice on 2026-10-25: it fires once, at the first.
    ("30 2 * * *", "Europe/Berlin", "2026-10-24 12:00:00", "2026-10-25 02:30 Sun", "2026-10-25 00:30 Sun"),
    ("0 0 * * *", "America/New_York", "2026-03-04 03:00:00", "2026-03-04 00:00 Wed", "2026-03-04 05:00 Wed"),
], ids=["winter", "summer", "dst-gap-skipped", "dst-repeat-once", "west-of-utc"])
def test_next_after_in_zone(schedule: str, zone: str, after: str, want_local: str, want_utc: str) -> None:
    got = cron.parse(schedule).next_after(utc(after), cron.zone(zone))
    assert (iso(got, zone), iso(got)) == (want_local, want_utc)


def test_repeated_hour_fires_once() -> None:
    sched, berlin = cron.parse("30 2 * * *"), cron.zone("Europe/Berlin")
    first = sched.next_after(utc("2026-10-24 12:00:00"), berlin)
    assert first is not None
    assert iso(sched.next_after(first, berlin), "Europe/Berlin") == "2026-10-26 02:30 Mon"


@pytest.mark.parametrize(("schedule", "error"), [
    ("* * * *", "expected exactly 5 fields"),
    ("60 * * * *", "minute: 60 is out of range 0-59"),
    ("* 24 * * *", "hour: 24 is out of range 0-23"),
    ("* * 0 * *", "day of month: 0 is out of range 1-31"),
    ("* * * FOO *", "month: 'FOO' is not a number or a name"),
    ("*/0 * * * *", "step '0' must be a positive number"),
    ("5-1 * * * *", "runs backwards"),
    ("1,,2 * * * *", "empty list item"),
    ("@every 5m", "@every is not supported"),
    ("TZ=UTC * * * * *", "spec.timeZone"),
], ids=["four-fields", "minute-range", "hour-range", "dom-zero", "bad-month", "zero-step", "backwards",
        "empty-item", "every", "tz-prefix"])
def test_parse_errors(schedule: str, error: str) -> None:
    with pytest.raises(cron.CronError, match=error.replace("(", r"\(")):
        cron.parse(schedule)


@pytest.mark.parametrize(("name", "ok"), [("", True), ("UTC", True), ("Asia/Tokyo", True), ("Local", False),
                                          ("Mars/Olympus", False), ("../etc/passwd", False)],
                         ids=["empty", "utc", "tokyo", "local", "unknown", "path"])
def test_zone(name: str, ok: bool) -> None:
    if ok:
        assert cron.zone(name) is not None
    else:
        with pytest.raises(cron.CronError):
            cron.zone(name)


def test_impossible_schedule_has_no_next() -> None:
    assert cron.parse("0 0 31 2 *").next_after(utc("2026-01-01 00:00:00")) is None


@pytest.mark.parametrize(("schedule", "zone", "at", "want"), [
    ("*/5 * * * *", "UTC", "2026-03-04 10:07:00", "2026-03-04 10:05 Wed"),
    ("*/5 * * * *", "UTC", "2026-03-04 10:05:00", "2026-03-04 10:05 Wed"),  # at counts
    ("30 2 * * MON-FRI", "UTC", "2026-03-09 01:00:00", "2026-03-06 02:30 Fri"),
    ("30 2 * * *", "Europe/Berlin", "2026-03-29 12:00:00", "2026-03-28 02:30 Sat"),  # the gap day has none
], ids=["earlier-minute", "exact", "over-weekend", "dst-gap"])
def test_last_at_or_before(schedule: str, zone: str, at: str, want: str) -> None:
    got = cron.parse(schedule).last_at_or_before(utc(at), cron.zone(zone))
    assert iso(got, zone) == want
