"""One check of one model: the reference and the window read, every monitor computed.

The monitored version is the model's champion. The reference is the first
``reference_cases`` decisions of it after it became champion (or its decisions in a fixed
time range); the window the newest ``window_cases`` decisions after the reference (within
the last ``window_seconds`` when set). Inputs come from the kept cases of those calls;
predicted classes and confidences from their ``model.called`` records; overrides from the
feedback on the model's suggestions and QA precision from QA labels, both in the window's
time range.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import AevosError
from ..evolution.certify import calibrate
from ..records.monitors import MONITORS, MonitorConfig, MonitorResult
from . import statistics as st

if TYPE_CHECKING:
    from ..cases import KeptCases
    from ..storage import Store
    from ..storage.monitors import CallRow

#: Most decisions a reference or a window holds.
MAX_CALLS = 20_000
#: Most kept cases read for input drift per side.
MAX_INPUTS = 5_000
_PAGE = 1000
#: Most pages of kept cases read per side (cases of other versions share the time range).
_MAX_PAGES = 50


def _no_data(
    config: MonitorConfig,
    version: int | None,
    monitor: str,
    reason: str,
    at: float,
    n: int = 0,
    window: tuple[float | None, float | None] = (None, None),
) -> MonitorResult:
    return MonitorResult(
        tenant=config.tenant,
        model=config.model,
        version=version,
        monitor=monitor,
        status="no_data",
        value=None,
        threshold=None,
        p_value=None,
        alert=False,
        n=n,
        since=window[0],
        until=window[1],
        figures={"reason": reason},
        at=at,
    )


def _result(
    config: MonitorConfig,
    version: int,
    monitor: str,
    finding: st.Finding,
    n: int,
    window: tuple[float, float],
    at: float,
) -> MonitorResult:
    return MonitorResult(
        tenant=config.tenant,
        model=config.model,
        version=version,
        monitor=monitor,
        status="alert" if finding.alert else "ok",
        value=finding.value,
        threshold=finding.threshold,
        p_value=finding.p_value,
        alert=finding.alert,
        n=n,
        since=window[0],
        until=window[1],
        figures=finding.figures,
        at=at,
    )


class Check:
    """Compute every monitor of ``config``'s model at ``now``."""

    def __init__(
        self, store: Store, cases: Callable[[], KeptCases], config: MonitorConfig, now: float
    ) -> None:
        self.store = store
        self.cases = cases
        self.config = config
        self.now = now

    def run(self) -> list[MonitorResult]:
        config, now = self.config, self.now
        with self.store.reading() as uow:
            champion = uow.monitors.champion(config.tenant, config.model)
        if champion is None:
            return [_no_data(config, None, m, "the model has no champion", now) for m in MONITORS]
        version, since_champion = champion
        reference = self._reference(version, since_champion)
        least = int(config.threshold("min_window"))
        if len(reference) < least:
            reason = (
                f"the reference holds {len(reference)} decisions of version {version}, "
                f"fewer than min_window ({least})"
            )
            return [_no_data(config, version, m, reason, now, len(reference)) for m in MONITORS]
        window = self._window(version, reference)
        if len(window) < least:
            reason = (
                f"the window holds {len(window)} decisions of version {version} after the "
                f"reference, fewer than min_window ({least})"
            )
            return [_no_data(config, version, m, reason, now, len(window)) for m in MONITORS]
        span = (window[0][0], window[-1][0])
        found = [
            self._inputs(version, reference, window, span),
            self._predictions(version, reference, window, span),
            self._labels(version, reference, window, span),
            self._confidences(version, reference, window, span),
            self._overrides(version, reference, window, span),
            self._precision(version, window, span),
            self._accuracy(version, since_champion, reference),
        ]
        return found

    # -- reading ----------------------------------------------------------------------------

    def _reference(self, version: int, since_champion: float) -> list[CallRow]:
        config = self.config
        with self.store.reading() as uow:
            if config.reference_since is not None or config.reference_until is not None:
                return uow.monitors.calls(
                    config.tenant,
                    config.model,
                    version,
                    since=config.reference_since,
                    until=config.reference_until,
                    limit=min(config.reference_cases, MAX_CALLS),
                )
            return uow.monitors.calls(
                config.tenant,
                config.model,
                version,
                since=since_champion,
                until=self.now,
                limit=min(config.reference_cases, MAX_CALLS),
            )

    def _window(self, version: int, reference: list[CallRow]) -> list[CallRow]:
        config = self.config
        start = reference[-1][0]
        if config.reference_until is not None:
            start = max(start, config.reference_until)
        if config.window_seconds is not None:
            start = max(start, self.now - config.window_seconds)
        limit = min(config.window_cases or MAX_CALLS, MAX_CALLS)
        seen = {call_id for _, call_id, _, _ in reference}
        with self.store.reading() as uow:
            # The reference's last calls may share its last instant: read a few more, then
            # drop the reference's own.
            rows = uow.monitors.calls(
                config.tenant,
                config.model,
                version,
                since=start,
                until=self.now,
                limit=limit + len(seen),
                newest=True,
            )
        kept = [row for row in rows if row[1] not in seen]
        return kept[-limit:]

    def _inputs_of(self, calls: Sequence[CallRow]) -> list[Any]:
        """The kept inputs of ``calls`` (those kept and not yet deleted), in call order."""
        wanted = {call_id for _, call_id, _, _ in calls if call_id is not None}
        cases = self.cases()
        found: dict[str, Any] = {}
        cursor, until = calls[0][0] - 1.0, calls[-1][0] + 1.0
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            if len(found) >= min(len(wanted), MAX_INPUTS):
                break
            page = cases.find(
                tenant=self.config.tenant,
                model=self.config.model,
                since=cursor,
                until=until,
                limit=_PAGE,
            )
            fresh = [case for case in page if case.case_id not in seen]
            for case in fresh:
                seen.add(case.case_id)
                if case.kind == "model_call" and case.call_id in wanted:
                    found[case.call_id] = case.input
            if len(page) < _PAGE or not fresh:
                break
            cursor = page[-1].created_at
        return [found[c] for _, c, _, _ in calls if c in found]

    # -- the monitors -----------------------------------------------------------------------

    def _inputs(
        self,
        version: int,
        reference: list[CallRow],
        window: list[CallRow],
        span: tuple[float, float],
    ) -> MonitorResult:
        config, at = self.config, self.now
        try:
            ref, win = self._inputs_of(reference), self._inputs_of(window)
        except AevosError as exc:
            return _no_data(config, version, "input_drift", f"kept cases: {exc.message}", at)
        least = int(config.threshold("min_window"))
        if len(ref) < least or len(win) < least:
            reason = (
                f"{len(ref)} reference and {len(win)} window inputs kept, "
                f"fewer than min_window ({least})"
            )
            return _no_data(config, version, "input_drift", reason, at, len(win), span)
        ref, win = [_textual(v) for v in ref], [_textual(v) for v in win]
        if all(isinstance(v, str) for v in ref + win):
            finding = st.text_drift(
                ref,
                win,
                p_value=config.threshold("p_value"),
                distance=config.threshold("text_distance"),
            )
        elif all(isinstance(v, dict) for v in ref + win):
            finding = st.tabular_drift(
                ref,
                win,
                p_value=config.threshold("p_value"),
                distance=config.threshold("tabular_distance"),
                drift_share=config.threshold("tabular_drift_share"),
            )
        else:
            reason = "the inputs are neither text nor records of features"
            return _no_data(config, version, "input_drift", reason, at, len(win), span)
        return _result(config, version, "input_drift", finding, len(win), span, at)

    def _predictions(
        self,
        version: int,
        reference: list[CallRow],
        window: list[CallRow],
        span: tuple[float, float],
    ) -> MonitorResult:
        config = self.config
        ref = [label for _, _, label, _ in reference if label is not None]
        win = [label for _, _, label, _ in window if label is not None]
        if not ref or not win:
            reason = "the calls recorded no predicted class"
            return _no_data(config, version, "prediction_drift", reason, self.now, len(win), span)
        finding = self._classes(ref, win, "prediction_distance", "new_class_share")
        return _result(config, version, "prediction_drift", finding, len(win), span, self.now)

    def _classes(self, ref: list[str], win: list[str], distance: str, share: str) -> st.Finding:
        """Drift of two samples of classes, with the configured thresholds named."""
        config = self.config
        return st.prediction_drift(
            ref,
            win,
            p_value=config.threshold("p_value"),
            distance=config.threshold(distance),
            new_class_share=config.threshold(share),
        )

    def _labels(
        self,
        version: int,
        reference: list[CallRow],
        window: list[CallRow],
        span: tuple[float, float],
    ) -> MonitorResult:
        """Drift of what people labelled the calls of the reference and of the window (its
        target drift, in Evidently's terms): the surest sign of new intents, since a model
        cannot predict a class it never learnt, while a reviewer names it. Both sides are
        labelled by the same rule (the same champion and threshold decide what people see),
        so the comparison is fair though reviews are not a random sample."""
        config = self.config
        with self.store.reading() as uow:
            known = uow.monitors.labels(config.tenant, config.model, reference[0][0], self.now)
        ref = [_label_text(known[c]) for _, c, _, _ in reference if c in known]
        win = [_label_text(known[c]) for _, c, _, _ in window if c in known]
        if not self._enough(ref, win):
            reason = f"{len(ref)} labelled calls in the reference and {len(win)} in the window"
            return _no_data(config, version, "label_drift", reason, self.now, len(win), span)
        finding = self._classes(ref, win, "label_distance", "new_label_share")
        # How many labels each new class holds so far (the retraining waits for them).
        counts = Counter(_label_text(label) for label in known.values())
        held = {c: counts[c] for c in finding.figures.get("new_classes", {})}
        figures = {
            **finding.figures,
            "reference_labels": len(ref),
            "window_labels": len(win),
            "new_class_labels": held,
        }
        found = st.Finding(
            finding.value, finding.threshold, finding.p_value, finding.alert, figures
        )
        return _result(config, version, "label_drift", found, len(win), span, self.now)

    def _enough(self, reference: list[Any], window: list[Any]) -> bool:
        least = int(self.config.threshold("min_window"))
        return len(reference) >= least and len(window) >= least

    def _confidences(
        self,
        version: int,
        reference: list[CallRow],
        window: list[CallRow],
        span: tuple[float, float],
    ) -> MonitorResult:
        config = self.config
        ref, win = _confidence_values(reference), _confidence_values(window)
        if not self._enough(ref, win):
            reason = "too few calls recorded a confidence"
            return _no_data(config, version, "confidence_drift", reason, self.now, len(win), span)
        finding = st.confidence_drift(
            ref,
            win,
            p_value=config.threshold("p_value"),
            distance=config.threshold("confidence_distance"),
        )
        return _result(config, version, "confidence_drift", finding, len(win), span, self.now)

    def _overrides(
        self,
        version: int,
        reference: list[CallRow],
        window: list[CallRow],
        span: tuple[float, float],
    ) -> MonitorResult:
        config = self.config
        with self.store.reading() as uow:
            decided = uow.monitors.overrides(config.tenant, config.model, span[0], span[1] + 1e-6)
            before = uow.monitors.overrides(
                config.tenant, config.model, reference[0][0], reference[-1][0] + 1e-6
            )
        if not decided or not before:
            side = "window" if not decided else "reference"
            reason = f"no person decided on the model's suggestions in the {side}"
            return _no_data(config, version, "override_rate", reason, self.now, len(decided), span)
        overridden = sum(decided)
        rate, low, high = st.proportion(overridden, len(decided))
        usual = sum(before) / len(before)
        limit = min(1.0, usual + config.threshold("max_override_increase"))
        finding = st.Finding(
            value=rate,
            threshold=limit,
            p_value=None,
            # Only when the whole interval lies above the limit: evidence, not a bad day.
            alert=low > limit,
            figures={
                "overrides": overridden,
                "decisions": len(decided),
                "ci": [low, high],
                "reference_rate": usual,
                "reference_decisions": len(before),
            },
        )
        return _result(config, version, "override_rate", finding, len(decided), span, self.now)

    def _precision(
        self, version: int, window: list[CallRow], span: tuple[float, float]
    ) -> MonitorResult:
        """The realised precision of the automated decisions: those at or above the
        version's certified threshold, labelled independently of their confidence (QA
        samples, sampled reviews, ground truth). A sampled review of a decision a person
        made anyway says nothing of automation."""
        config = self.config
        with self.store.reading() as uow:
            certification = uow.certifications.latest(config.tenant, config.model, version)
            samples = uow.monitors.qa_labels(config.tenant, config.model, span[0], self.now)
        if certification is None or certification.threshold is None:
            reason = f"version {version} has no certified threshold: nothing is automated"
            return _no_data(config, version, "qa_precision", reason, self.now, 0, span)
        predicted = {
            call_id: label
            for _, call_id, label, confidence in window
            if call_id is not None and certification.automates(confidence)
        }
        judged = [(predicted[c], label) for c, label in samples if c in predicted]
        if not judged:
            reason = "no QA sample labels an automated decision of the window"
            return _no_data(config, version, "qa_precision", reason, self.now, 0, span)
        right = sum(1 for guess, label in judged if guess == str(label))
        rate, low, high = st.proportion(right, len(judged))
        limit = config.threshold("min_precision")
        finding = st.Finding(
            value=rate,
            threshold=limit,
            p_value=None,
            alert=high < limit,
            figures={
                "correct": right,
                "samples": len(judged),
                "ci": [low, high],
                "certified_threshold": certification.threshold,
            },
        )
        return _result(config, version, "qa_precision", finding, len(judged), span, self.now)

    def _accuracy(
        self, version: int, since_champion: float, reference: list[CallRow]
    ) -> MonitorResult:
        """NannyML's CBPE: the expected accuracy of the newest ``estimate_window`` decisions
        from their confidences, each mapped through the calibration curve certification
        fitted on labelled cases (raw confidences are rarely calibrated: a 77-class linear
        model right 72% of the time averages 0.4), against the reference's estimate."""
        config = self.config
        with self.store.reading() as uow:
            certification = uow.certifications.latest(config.tenant, config.model, version)
            since = since_champion if config.reference_since is None else config.reference_since
            newest = uow.monitors.calls(
                config.tenant,
                config.model,
                version,
                since=since,
                until=self.now,
                limit=min(int(config.threshold("estimate_window")), MAX_CALLS),
                newest=True,
            )
        curve = None if certification is None else certification.calibration
        fitted_on = None if certification is None or curve is None else certification.n
        ref, win = _confidence_values(reference), _confidence_values(newest)
        if not newest or not self._enough(ref, win):
            reason = "too few calls recorded a confidence"
            return _no_data(config, version, "estimated_accuracy", reason, self.now, len(win))
        span = (newest[0][0], newest[-1][0])
        if curve is not None:
            ref, win = calibrate(ref, curve), calibrate(win, curve)
        estimate, low, high = st.estimated_accuracy(win)
        baseline = st.estimated_accuracy(ref)[0]
        limit = baseline - config.threshold("max_accuracy_drop")
        finding = st.Finding(
            value=estimate,
            threshold=limit,
            p_value=None,
            alert=high < limit,
            figures={
                "method": "cbpe",
                "estimate": estimate,
                "ci": [low, high],
                "reference_estimate": baseline,
                # Without a curve the confidences are taken as they are: say so.
                "calibrated": curve is not None,
                "calibration_cases": fitted_on,
            },
        )
        return _result(config, version, "estimated_accuracy", finding, len(win), span, self.now)


def _textual(value: Any) -> Any:
    """A record holding one text only (``{"text": ...}``) is that text."""
    if isinstance(value, dict) and len(value) == 1:
        (only,) = value.values()
        if isinstance(only, str):
            return only
    return value


def _label_text(label: Any) -> str:
    """A label as a class name: a record of one value (``{"intent": ...}``) is that value."""
    value = _textual(label)
    return value if isinstance(value, str) else str(value)


def _confidence_values(calls: list[CallRow]) -> list[float]:
    """The confidences the calls recorded (a model may give none)."""
    return [c for _, _, _, c in calls if c is not None]
