"""The model page's rollout panel: the model's latest rollout, where it stands, and the
figures of its last analysis, candidate beside champion."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...rollouts.model import step_name

if TYPE_CHECKING:
    from ...access import Access
    from ...identity import Principal

# (figure, label, format): what the panel shows of a verdict's figures, in order.
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("calls", "calls", "{:d}"),
    ("error_rate", "error rate", "{:.1%}"),
    ("latency_p95_ms", "latency p95", "{:.1f} ms"),
    ("cost_per_decision", "cost per decision", "{:.4g}"),
    ("labelled", "labelled decisions", "{:d}"),
    ("precision", "precision", "{:.1%}"),
    ("override_rate", "override rate", "{:.1%}"),
    ("agreement", "agreement with the champion", "{:.1%}"),
)
#: The actions offered in each state of an active rollout.
ACTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "replaying": (("pause", "Pause"), ("abort", "Abort")),
    "progressing": (("pause", "Pause"), ("abort", "Abort"), ("promote", "Promote now")),
    "paused": (("resume", "Resume"), ("abort", "Abort"), ("promote", "Promote now")),
}


def _shown(value: Any, form: str) -> str:
    if value is None:
        return "-"
    try:
        return form.format(value)
    except (TypeError, ValueError):
        return str(value)


def rollout_panel(access: Access, principal: Principal, model: str) -> dict[str, Any] | None:
    """What the panel shows of the model's latest rollout; None when it never had one."""
    found = access.rollouts.list(principal, model=model, limit=1)
    if not found:
        return None
    rollout = found[0]
    verdict = rollout.last_verdict or None
    figures = []
    if verdict is not None:
        candidate = verdict.get("candidate") or {}
        champion = verdict.get("champion") or {}
        figures = [
            (label, _shown(candidate.get(key), form), _shown(champion.get(key), form))
            for key, label, form in FIGURES
        ]
    return {
        "rollout": rollout,
        "steps": [step_name(p) for p in rollout.steps],
        "step_name": rollout.step_name,
        "verdict": verdict,
        "figures": figures,
        "actions": ACTIONS.get(rollout.state, ()),
    }
