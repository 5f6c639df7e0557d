"""Property tests: retry arithmetic, the codec, and the run state machine in storage."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from aevos import RetryPolicy, RunStatus, SerializationError
from aevos.codec import decode, encode
from aevos.records.queue import Queue
from aevos.records.run import NewRun
from aevos.records.status import TERMINAL, TRANSITIONS, can_transition
from aevos.storage import LeaseLost, StepRecord, Store, open_store

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 50),
    initial_interval=st.floats(0, 100, allow_nan=False),
    backoff=st.floats(1, 10, allow_nan=False),
    max_interval=st.floats(0, 3600, allow_nan=False),
    jitter=st.floats(0, 1, allow_nan=False),
)


@given(policies, st.integers(1, 2000), st.randoms(use_true_random=False))
def test_delay_stays_within_jitter_bounds_and_the_cap(
    policy: RetryPolicy, failures: int, rng: random.Random
) -> None:
    base = policy.base_delay(failures)
    delay = policy.delay(failures, rng)
    assert 0 <= delay <= policy.max_interval
    assert base * (1 - policy.jitter) - 1e-9 <= delay <= base * (1 + policy.jitter) + 1e-9


@given(policies, st.integers(1, 200))
def test_base_delay_grows_monotonically_to_the_cap(policy: RetryPolicy, failures: int) -> None:
    assert policy.base_delay(failures) <= policy.base_delay(failures + 1)
    assert policy.base_delay(1) == min(policy.max_interval, policy.initial_interval)


@given(policies, st.integers(0, 60))
def test_attempts_never_exceed_max_attempts(policy: RetryPolicy, failures: int) -> None:
    retried = policy.should_retry(ConnectionError("x"), failures)
    assert retried == (failures < policy.max_attempts)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=30,
)


@given(json_values)
def test_codec_round_trips_json_values(value: Any) -> None:
    assert decode(encode(value, "value")) == value


@given(json_values, st.sampled_from([set(), object(), b"bytes", float("nan")]))
def test_codec_names_the_path_of_what_it_refuses(value: Any, bad: Any) -> None:
    with pytest.raises(SerializationError, match=r"\$\.inner\[1\]"):
        encode({"inner": [value, bad]}, "value")


def test_transition_table_is_closed() -> None:
    for status, targets in TRANSITIONS.items():
        assert targets <= set(RunStatus)
        if status in (RunStatus.SUCCEEDED, RunStatus.REJECTED):
            assert not targets
    assert {s for s in RunStatus if s.terminal} == TERMINAL


class RunLifecycle(RuleBasedStateMachine):
    """Random operations by two executors on one run; every observed status change must be
    allowed by TRANSITIONS and the store must agree with a simple model."""

    store: Store

    def __init__(self) -> None:
        super().__init__()
        self.seq = 0

    @initialize()
    def create(self) -> None:
        self.run_id = uuid.uuid4().hex
        # A queue of its own: claims must see only this example's run, or replays by
        # hypothesis would depend on what earlier examples left in the database.
        self.queue = Queue(f"q-{self.run_id}")
        self.store.insert_run(NewRun(self.run_id, "wf", self.queue.name, "{}", "v1"))
        self.status = RunStatus.ENQUEUED
        self.holder: str | None = None

    def _observe(self) -> None:
        new = self.store.get_run(self.run_id).status
        assert new == self.status or can_transition(self.status, new), (self.status, new)
        self.status = new

    @rule(owner=st.sampled_from(["worker-a", "worker-b"]))
    def claim(self, owner: str) -> None:
        claimed = self.store.claim(owner, self.queue, ["wf"], 1, lease_seconds=60)
        mine = [r for r in claimed if r.run_id == self.run_id]
        if mine:
            assert self.status in (RunStatus.ENQUEUED, RunStatus.WAITING)
            self.holder = owner
        self._observe()

    @rule(owner=st.sampled_from(["worker-a", "worker-b"]))
    def record_step(self, owner: str) -> None:
        record = StepRecord(self.seq, "s", "SUCCEEDED", "1", None, 1, time.time(), time.time())
        try:
            self.store.record_step(self.run_id, owner, record)
        except LeaseLost:
            assert not (self.status is RunStatus.RUNNING and self.holder == owner)
            return
        assert self.status is RunStatus.RUNNING and self.holder == owner
        self.seq += 1

    @rule(owner=st.sampled_from(["worker-a", "worker-b"]))
    def park(self, owner: str) -> None:
        parked = self.store.park(self.run_id, owner, time.time() - 1)  # due at once
        assert parked == (self.status is RunStatus.RUNNING and self.holder == owner)
        self._observe()

    @rule(owner=st.sampled_from(["worker-a", "worker-b"]), ok=st.booleans())
    def finish(self, owner: str, ok: bool) -> None:
        status = RunStatus.SUCCEEDED if ok else RunStatus.FAILED
        done = self.store.finish_run(self.run_id, owner, status, output_json="1")
        assert done == (self.status is RunStatus.RUNNING and self.holder == owner)
        self._observe()

    @rule()
    def cancel(self) -> None:
        self.store.cancel(self.run_id)
        self._observe()
        assert self.status.terminal

    @precondition(lambda self: self.status in (RunStatus.FAILED, RunStatus.CANCELLED))
    @rule()
    def resume(self) -> None:
        self.store.resume(self.run_id)
        self._observe()
        assert self.status is RunStatus.ENQUEUED

    @invariant()
    def terminal_runs_hold_no_lease(self) -> None:
        if not hasattr(self, "run_id"):
            return
        info = self.store.get_run(self.run_id)
        if info.status.terminal or info.status is RunStatus.ENQUEUED:
            assert info.owner is None or info.status is RunStatus.CANCELLED
        if info.status is RunStatus.RUNNING:
            assert info.owner is not None and info.lease_until is not None


def test_run_state_machine(database_url: str) -> None:
    store = open_store(database_url)
    RunLifecycle.store = store
    try:
        settings_ = settings(
            max_examples=25,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        RunLifecycle.TestCase.settings = settings_
        RunLifecycle.TestCase().runTest()
    finally:
        store.close()
