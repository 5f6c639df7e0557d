"""``aevos demo``: how a certified candidate is rolled out (the rollout's plan, the replay
it starts, and how the progress bar and the report show rollouts)."""

from __future__ import annotations

from typing import Any

from ..app import Aevos
from ..rollouts import Criteria, Replay, ReplayCriteria, Replays, Rollout

TENANT = "default"
#: The staged rollout of every certified candidate: shadow, then canary shares.
ROLLOUT_STEPS = (0, 5, 25, 50, 100)
#: A step's deadline: a step without enough evidence by then pauses the rollout for an
#: operator (the stream gives every step its evidence well within it).
STEP_MINUTES = 2.0
#: What each step must show. A few dozen calls and labels per step keep a rollout within
#: tens of seconds of the stream. Version 1 knows 5 tickets per intent, so a better
#: candidate often disagrees with it in shadow: agreement is a floor against a broken
#: candidate. Precision is not compared with the champion's (``max_precision_drop=1``):
#: in a canary step the candidate's labelled decisions are the tickets it did not automate
#: (its hardest) while the uncertified champion's are all of its tickets, so the figures
#: would judge them on different cases; the replay compares their accuracy on the same
#: kept cases instead, before any traffic. Both versions answer in milliseconds: on two
#: busy cores a p95 under 50 ms is thread scheduling, not the model (``latency_floor_ms``).
ROLLOUT_CRITERIA = Criteria(
    min_calls=30, min_labels=5, min_agreement=0.6, max_precision_drop=1.0, latency_floor_ms=50.0
)
#: The final promotion's policy (examples/support_triage/policies/support-rollout.yaml).
ROLLOUT_POLICY = "support-rollout"
#: The replay before shadow: the newest kept cases, re-decided at a pace that leaves the
#: workers to the stream, judged like a step (agreement a floor, accuracy on the labelled
#: cases at most 2 points below the champion's).
REPLAY_CASES = 200
REPLAY_RATE = 100.0
REPLAY_CRITERIA = ReplayCriteria(min_cases=50, min_agreement=0.6, max_accuracy_drop=0.02)
#: The controller's tick on the demo's evolution worker, in seconds (workers' default: 5).
TICK = 1.0


def rollout_plan(steps: tuple[int, ...]) -> dict[str, Any]:
    """Retraining's ``rollout`` option: the replay, then ``steps``, each judged on
    :data:`ROLLOUT_CRITERIA` within :data:`STEP_MINUTES`, then the :data:`ROLLOUT_POLICY`
    gate."""
    return {
        "steps": list(steps),
        "step_minutes": STEP_MINUTES,
        "replay": True,
        "criteria": ROLLOUT_CRITERIA.to_dict(),
        "policy": ROLLOUT_POLICY,
    }


def rollout_settings(steps: tuple[int, ...]) -> dict[str, Any]:
    """The rollout part of the report's settings."""
    return {
        "steps": list(steps),
        "step_minutes": STEP_MINUTES,
        "criteria": ROLLOUT_CRITERIA.to_dict(),
        "policy": ROLLOUT_POLICY,
        "replay": {
            "cases": REPLAY_CASES,
            "rate": REPLAY_RATE,
            "criteria": REPLAY_CRITERIA.to_dict(),
        },
    }


class DemoReplays:
    """The replay a rollout of the demo starts (``app.rollouts.replays``): the newest
    :data:`REPLAY_CASES` kept cases at :data:`REPLAY_RATE` cases per second, judged by
    :data:`REPLAY_CRITERIA`; the replay service's defaults (1,000 cases at 20 per second)
    would hold each rollout for a minute of a few-minute demo."""

    def __init__(self, replays: Replays) -> None:
        self.replays = replays

    def start(self, model: str, version: int, *, tenant: str, actor: str) -> str:
        return self.replays.start(
            model,
            version,
            tenant=tenant,
            actor=actor,
            limit=REPLAY_CASES,
            rate=REPLAY_RATE,
            criteria=REPLAY_CRITERIA,
        )

    def latest(self, model: str, version: int, *, tenant: str) -> Replay | None:
        return self.replays.latest(model, version, tenant=tenant)


def rollout_state(rollout: Rollout | None) -> str:
    """A rollout as the progress bar shows it: ``v3 canary 25%``, ``v3 promoted``."""
    if rollout is None:
        return "-"
    if rollout.state in ("progressing", "replaying"):
        return f"v{rollout.version} {rollout.step_name}"
    if rollout.state == "paused":
        return f"v{rollout.version} {rollout.step_name} paused"
    return f"v{rollout.version} {rollout.state.replace('_', ' ')}"


def rollout_step(action: str, step_name: str) -> str:
    """Where a transition took the rollout: its step, or how it ended."""
    ended = {
        "rollout.promoted": "promoted",
        "rollout.rolled_back": "rolled back",
        "rollout.aborted": "aborted",
        "rollout.failed": "failed",
        "rollout.paused": "paused",
    }
    return ended.get(action, step_name)


def rollout_summaries(app: Aevos, model: str, since: float) -> list[dict[str, Any]]:
    """Each rollout of the run, oldest first: its candidate, where it ended (or stands),
    its path (``replay``, ``shadow``, ``canary 5%``, ..., ``promoted``) and replay."""
    rollouts = app.rollouts.list(model=model, active=None, limit=200)
    summaries = []
    for rollout in sorted(rollouts, key=lambda r: r.created_at):
        if rollout.created_at < since:
            continue
        history = app.rollouts.history(rollout.rollout_id, tenant=TENANT)
        path = [
            "replay"
            if t.action == "rollout.started" and rollout.replay
            else rollout_step(t.action, t.step_name)
            for t in history
        ]
        replay = app.replays.latest(rollout.model, rollout.version, tenant=TENANT)
        summaries.append(
            {
                "rollout_id": rollout.rollout_id,
                "version": rollout.version,
                "champion": rollout.champion,
                "state": rollout.state,
                "step": rollout.step_name,
                "steps": list(rollout.steps),
                "path": [p for i, p in enumerate(path) if i == 0 or p != path[i - 1]],
                "reason": rollout.reason,
                "replay": None
                if replay is None
                else {"status": replay.status, "reason": replay.reason},
                "seconds": round(rollout.updated_at - rollout.created_at, 1),
            }
        )
    return summaries
