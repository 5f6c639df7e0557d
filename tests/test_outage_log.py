"""How a storage outage is logged (``aevos.storage.outage``), for any sequence of failures
and recoveries: one warning when an outage starts and one when it ends, an info line per
change of cause, debug lines for the retries in between; a traceback once per distinct error.
"""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from aevos.storage.outage import Outage, Tracebacks, seconds

Event = str | None  # a failure's cause, or None: storage answered


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _logger(name: str) -> tuple[logging.Logger, _Records]:
    log = logging.getLogger(f"aevos.test.{name}")
    log.handlers[:] = []
    log.propagate = False
    log.setLevel(logging.DEBUG)
    handler = _Records()
    log.addHandler(handler)
    return log, handler


@given(st.lists(st.one_of(st.none(), st.sampled_from(["refused", "shutting down", "full"]))))
def test_one_warning_per_change_of_state(events: list[Event]) -> None:
    log, handler = _logger("outage")
    outage = Outage(log, "worker")
    starts = ends = changes = repeats = 0
    cause: str | None = None
    down = False
    for event in events:
        if event is None:
            ends += down
            assert (outage.ended() is not None) == down  # the outage's length, if there was one
            down, cause = False, None
        else:
            if not down:
                starts += 1
            elif event != cause:
                changes += 1
            else:
                repeats += 1
            down, cause = True, event
            outage.failed(event, "retrying in 1 s")
        assert outage.ongoing is down
    by_level = [r.levelno for r in handler.records]
    assert by_level.count(logging.WARNING) == starts + ends
    assert by_level.count(logging.INFO) == changes
    assert by_level.count(logging.DEBUG) == repeats
    started = [r.getMessage() for r in handler.records if "storage unavailable:" in r.getMessage()]
    assert all(line.endswith("; retrying in 1 s") for line in started)


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1))
def test_a_traceback_once_per_distinct_error(messages: list[str]) -> None:
    log, handler = _logger("tracebacks")
    tracebacks = Tracebacks(log)
    for message in messages:
        tracebacks.error(RuntimeError(message), "claiming failed; retrying in %s", "1 s")
    with_traceback = [r for r in handler.records if r.exc_info]
    assert len(with_traceback) == len(set(messages))
    assert len(handler.records) == len(messages)


def test_seconds_as_the_log_lines_say_them() -> None:
    assert [seconds(d) for d in (0.02, 0.25, 1.0, 2.0, 5.0)] == [
        "0.02 s",
        "0.2 s",
        "1.0 s",
        "2 s",
        "5 s",
    ]
