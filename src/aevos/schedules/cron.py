"""Cron expressions in a time zone, as the instants they tick at.

An expression is matched against the *local wall time* of its zone (croniter iterates wall
times; :mod:`zoneinfo` turns each into an instant), so ``0 9 * * *`` in Europe/Paris ticks
at 09:00 in Paris in winter and in summer. Two adjustments make a daily job run exactly
once a day across a daylight-saving change, as cron itself does:

- a wall time the clocks skip (02:30 on the night they go forward) ticks at the instant
  they change (03:00 local), once however many skipped wall times matched;
- a wall time the clocks repeat (02:30 on the night they go back) ticks at its first
  occurrence only.

So an expression that matches every few minutes does not tick during the repeated hour's
second pass. Instants are epoch seconds (UTC by definition).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ..errors import DefinitionError

#: The croniter aliases accepted besides five-field expressions.
ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
# A tick is looked for at most this many wall times ahead (a year of minutes and more):
# croniter gives up on an expression that never matches well before.
_MAX_STEPS = 1_000_000


@dataclass(frozen=True)
class Cron:
    """A checked cron expression in a time zone (:meth:`parse`)."""

    expression: str
    timezone: str
    zone: ZoneInfo = field(repr=False, compare=False)

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Cron:
        """The expression checked: five fields (minute hour day month weekday) or one of
        :data:`ALIASES`, in an IANA time zone; a :class:`DefinitionError` naming the fault
        otherwise."""
        if not isinstance(expression, str) or not 0 < len(expression) <= 200:
            raise DefinitionError("a cron expression must be a string of 1-200 characters")
        text = " ".join(expression.split())
        if text.startswith("@"):
            if text not in ALIASES:
                raise DefinitionError(
                    f"unknown cron alias {text[:40]!r} (known: {', '.join(ALIASES)})"
                )
        elif len(text.split()) != 5:
            raise DefinitionError(
                f"cron expression {text[:60]!r} must have five fields "
                "(minute hour day-of-month month day-of-week)"
            )
        if not croniter.is_valid(text):
            raise DefinitionError(f"invalid cron expression {text[:60]!r}")
        if not isinstance(timezone, str) or not 0 < len(timezone) <= 64:
            raise DefinitionError("a time zone must be an IANA name of 1-64 characters")
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise DefinitionError(
                f"unknown time zone {timezone[:64]!r} (an IANA name such as 'Europe/Paris')"
            ) from None
        cron = cls(text, timezone, zone)
        try:
            cron.next_after(datetime(2000, 1, 1, tzinfo=UTC).timestamp())
        except DefinitionError:
            raise
        except Exception:
            raise DefinitionError(f"cron expression {text[:60]!r} never matches") from None
        return cron

    def ticks(self, after: float, until: float, limit: int) -> list[float]:
        """The instants ``t`` with ``after < t <= until``, oldest first, at most ``limit``."""
        found: list[float] = []
        for instant in self._instants(after):
            if instant > until or len(found) >= limit:
                break
            found.append(instant)
        return found

    def next_after(self, after: float) -> float:
        """The first tick strictly after ``after``."""
        for instant in self._instants(after):
            return instant
        raise DefinitionError(f"cron expression {self.expression!r} never matches")

    def _instants(self, after: float) -> Iterator[float]:
        zone = self.zone
        wall = datetime.fromtimestamp(after, zone).replace(tzinfo=None)
        walls = croniter(self.expression, wall)
        last = after
        for _ in range(_MAX_STEPS):
            instant = self._instant(walls.get_next(datetime))
            # Wall times behind the start (the repeated hour's first pass, seen from its
            # second) and skipped ones mapped to an instant already given are not ticks.
            if instant > last:
                last = instant
                yield instant

    def _instant(self, wall: datetime) -> float:
        """The instant of local wall time ``wall``: its first occurrence, or, if the clocks
        skip it, the instant they change."""
        zone = self.zone
        later = wall.replace(tzinfo=zone, fold=0).timestamp()
        if datetime.fromtimestamp(later, zone).replace(tzinfo=None) == wall:
            return later
        # In a gap: fold=0 reads it with the offset before the change (an instant after
        # it), fold=1 with the offset after (an instant before it). The change lies between.
        earlier = wall.replace(tzinfo=zone, fold=1).timestamp()
        target = _offset(zone, later)
        low, high = math.floor(earlier), math.ceil(later)
        while high - low > 1:
            middle = (low + high) // 2
            if _offset(zone, middle) == target:
                high = middle
            else:
                low = middle
        return float(high)


def _offset(zone: ZoneInfo, instant: float) -> timedelta | None:
    return datetime.fromtimestamp(instant, UTC).astimezone(zone).utcoffset()
