"""Cron schedules as CronJob's `spec.schedule` takes them, and their times in a time zone.

Pure: `parse(text)` gives a `Schedule`; `Schedule.next_after(t, zone)` the first time strictly
after `t` (UTC seconds) that the schedule fires, reckoned in wall-clock time of `zone`.
What must hold (the standard five-field syntax, as Kubernetes' robfig/cron parser reads it):
- fields: minute hour day-of-month month day-of-week; `*` (or `?`), `a`, `a-b`, `*/n`, `a-b/n`,
  `a/n` (a to the field's end), lists `x,y`; month and weekday names (JAN, MON); weekday 7 is
  Sunday; descriptors @yearly/@annually/@monthly/@weekly/@daily/@midnight/@hourly;
- day-of-month and day-of-week: when both are restricted a day matching either fires (cron's
  OR rule); when one is `*`, only the other counts;
- times are wall-clock times in the zone: a time skipped by a DST change never fires, a time
  repeated by one fires once (the first).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
_DAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
# Field name, low, high, names.
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}), ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
# No schedule of five fields has a gap longer than this between two firings (Feb 29 on a Monday is
# the longest: 28 years); beyond it we stop searching.
_SEARCH_YEARS = 30
_SLACK = dt.timedelta(hours=2)  # wall-clock times near the start still checked (DST shifts are up to 1-2 h)


class CronError(ValueError):
    """A schedule or time zone that cannot be used, with what is wrong in the message."""


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_star: bool
    weekdays_star: bool

    def day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow

    def next_after(self, after: float, zone: dt.tzinfo = dt.UTC) -> float | None:
        """The first firing time strictly after `after` (UTC seconds), or None if there is none."""
        start = dt.datetime.fromtimestamp(after, zone).replace(tzinfo=None, second=0, microsecond=0)
        for local in self._walk(start, forward=True):
            when = _to_utc(local, zone)
            if when is not None and when > after:
                return when
        return None

    def last_at_or_before(self, at: float, zone: dt.tzinfo = dt.UTC) -> float | None:
        """The latest firing time at or before `at` (UTC seconds), or None if there is none."""
        start = dt.datetime.fromtimestamp(at, zone).replace(tzinfo=None, second=0, microsecond=0)
        for local in self._walk(start, forward=False):
            when = _to_utc(local, zone)
            if when is not None and when <= at:
                return when
        return None

    def _walk(self, start: dt.datetime, *, forward: bool) -> Iterator[dt.datetime]:
        """Matching wall-clock minutes from `start` (inclusive, and its neighbour minute, which DST
        folds can need) onward or backward, up to the search horizon."""
        hours = sorted(self.hours, reverse=not forward)
        minutes = sorted(self.minutes, reverse=not forward)
        step = dt.timedelta(days=1 if forward else -1)
        day = start.date()
        for _ in range(_SEARCH_YEARS * 366):
            if self.day_matches(day):
                for hour in hours:
                    for minute in minutes:
                        local = dt.datetime.combine(day, dt.time(hour, minute))
                        if (forward and local < start - _SLACK) or (not forward and local > start + _SLACK):
                            continue
                        yield local
            day += step


def _to_utc(local: dt.datetime, zone: dt.tzinfo) -> float | None:
    """UTC seconds of a wall-clock time in `zone`; None when the time does not exist there (DST gap)."""
    aware = local.replace(tzinfo=zone, fold=0)
    back = aware.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None)
    if back != local:
        return None
    return aware.timestamp()


def _number(text: str, low: int, high: int, names: dict[str, int], what: str) -> int:
    value = names.get(text.upper()) if names else None
    if value is None:
        if not text.isdigit():
            raise CronError(f"{what}: {text!r} is not a number{' or a name' if names else ''}")
        value = int(text)
    if not low <= value <= high:
        raise CronError(f"{what}: {value} is out of range {low}-{high}")
    return value


def _field(text: str, low: int, high: int, names: dict[str, int], what: str) -> tuple[frozenset[int], bool]:
    """The values of one field and whether it was `*` (or `?`)."""
    values: set[int] = set()
    star = text in ("*", "?")
    for part in text.split(","):
        if not part:
            raise CronError(f"{what}: empty list item in {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{what}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base in ("*", "?"):
            lo, hi = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            lo, hi = _number(a, low, high, names, what), _number(b, low, high, names, what)
            if lo > hi:
                raise CronError(f"{what}: range {base!r} runs backwards")
        else:
            lo = _number(base, low, high, names, what)
            hi = high if step_text else lo
        values.update(range(lo, hi + 1, step))
    return frozenset(values), star


def parse(text: str) -> Schedule:
    """The schedule of a five-field cron expression or an @descriptor."""
    spec = text.strip()
    if spec.startswith(("TZ=", "CRON_TZ=")):
        raise CronError("time zones go in spec.timeZone, not in the schedule")
    spec = _DESCRIPTORS.get(spec.lower(), spec)
    if spec.startswith("@"):
        raise CronError(f"unknown descriptor {spec!r} (@every is not supported)")
    parts = spec.split()
    if len(parts) != 5:
        raise CronError(f"expected exactly 5 fields (minute hour day-of-month month day-of-week), found {len(parts)}")
    parsed = [_field(p, lo, hi, names, what) for p, (what, lo, hi, names) in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in parsed[4][0])
    return Schedule(minutes=parsed[0][0], hours=parsed[1][0], days=parsed[2][0], months=parsed[3][0],
                    weekdays=weekdays, days_star=parsed[2][1], weekdays_star=parsed[4][1])


def zone(name: str) -> dt.tzinfo:
    """The time zone of an IANA name ("Europe/Berlin"); empty or "UTC" is UTC."""
    if not name or name in ("UTC", "Etc/UTC"):
        return dt.UTC
    if name.lower() == "local":
        raise CronError('unknown time zone "Local": name an IANA zone such as "Europe/Berlin"')
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CronError(f'unknown time zone "{name}"') from exc
