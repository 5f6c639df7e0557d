"""The rejection budget: every refusal is recorded one by one or counted in a summary, never
both and never neither, and no window records more than its limit one by one."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from aevos.audit.rejections import RejectionBudget

refusals = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.floats(0, 5), st.sampled_from(["x", "y"])),
    max_size=200,
)


@given(refusals, st.integers(1, 5), st.sampled_from([0.5, 1.0, 2.0]))
def test_every_refusal_is_recorded_or_counted_once(
    events: list[tuple[str, float, str]], limit: int, window: float
) -> None:
    budget = RejectionBudget(window=window)
    recorded: Counter[str] = Counter()
    counted: Counter[str] = Counter()
    now = 0.0
    for key, step, reason in events:
        now += step  # time moves on between refusals
        if budget.admit(key, reason, now, limit):
            recorded[key] += 1
        # Summaries are taken now and then, as workers do, and once more at the end.
        if step > 4:
            for summary in budget.due(now):
                counted[str(summary.key)] += summary.count
    for summary in budget.due(math.inf):
        assert summary.count == sum(summary.reasons.values()) > 0
        counted[str(summary.key)] += summary.count
    assert budget.due(math.inf) == []
    assert recorded + counted == Counter(key for key, _, _ in events)


def test_a_window_records_its_limit_then_counts_by_reason() -> None:
    budget = RejectionBudget(window=60)
    admitted = [budget.admit("k", "bad_signature", 1.0 + i, limit=3) for i in range(5)]
    assert admitted == [True, True, True, False, False]
    assert budget.due(30.0) == []  # the minute has not ended
    (summary,) = budget.due(61.0)
    assert (summary.key, summary.start, summary.end) == ("k", 1.0, 61.0)
    assert summary.reasons == {"bad_signature": 2}
    assert summary.describe() == (
        "2 more refusals in 60 s were counted, not recorded one by one (bad_signature 2)"
    )
    assert budget.admit("k", "bad_signature", 62.0, limit=3)  # a new minute
