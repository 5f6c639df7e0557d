"""Certified automation thresholds: automate only where precision is shown, not hoped for.

Given labelled cases the model did not train on — each a confidence and whether the model was
right — :func:`certify` picks the lowest confidence threshold λ such that, with probability at
least 1 - δ over the draw of those cases, the precision of the decisions at or above λ is at
least the target. It is Learn-then-Test (Angelopoulos, Bates, Candès, Jordan, Lei, 2021): for
each threshold λ of a grid fixed in advance, the null hypothesis "precision(λ) < target" is
tested with a p-value valid for the count of errors among the n(λ) cases at or above λ

- ``"binomial"`` (default): the exact binomial tail P(Binomial(n(λ), 1 - target) ≤ errors),
  valid because, given n(λ), the errors are a binomial draw with the true error rate;
- ``"hoeffding-bentkus"``: the LTT paper's bound for any loss in [0, 1],
  min(exp(-n·h(r̂ ∧ alpha, alpha)), e · P(Binomial(n, alpha) ≤ ⌈n r̂⌉)) — looser, kept for comparison;

and the thresholds are tested in a fixed sequence from the most confident down, stopping at
the first that fails; every threshold passed before the stop is certified, and the lowest of
them automates the most. Fixed-sequence testing spends all of δ on each test (no Bonferroni
split), which is what makes it powerful when precision falls as the threshold falls.

Where the sequence starts. At the top of the grid only a handful of cases are that
confident, and a handful can never pass: with 0.97 and δ = 0.1, even 75 correct cases out of
75 give p = 0.97⁷⁵ ≈ 0.10. A sequence that starts there stops at once — or at the first
confident error — and nothing is ever automated, however good the model. So the sequence
starts at the most confident threshold with at least ``min_count`` cases at or above it. The
default ``min_count`` is the smallest n at which a model erring at a third of the allowed rate
passes with probability 0.9 (308 cases for 0.97 and δ = 0.1): with fewer, a good model's one
or two early errors end the sequence (on banking77, seed 2 of examples/evolution_certify.py:
starting at 129 cases certified 26.5% of test.csv, at 308 cases 46.0%, at 98.2%); with many more,
confident thresholds a good model deserves are skipped and small calibration sets certify
nothing.

That start needs 308 cases above it, so a calibration set of a few hundred (the first weeks of
a new model, when every certified case saved is a review saved) could only certify above its
most confident 308 cases — often nothing. So by default the count asked for also shrinks with
the calibration set, to half of it, but never below :func:`floor_min_count` (176 for 0.97 and
δ = 0.1: where a model erring at a fifth of the allowed rate, as the most confident cases of a
useful model do, passes with probability 0.9). On banking77 (an ensemble on 1,185 and 2,385
labels, 100 random calibration sets each), 400 calibration cases certified 51-53% of test.csv
on average with this start against 18% with 308, 600 cases 64-70% against 35-70%, and from
616 cases on the start is 308 again; the share of draws whose test precision fell below the
target stayed within δ. The start depends on the number of cases and their confidences only,
never on which cases were right. ``min_count=0`` starts at the top of
the grid: plain LTT, the same as MAPIE's ``BinaryClassificationController`` with fixed-sequence
testing (a test shows the two agree). LTT's theorem covers a sequence fixed before the data;
choosing the start from the count of confident cases is a mild departure whose effect a
property test measures (the certified threshold's true precision reaches the target in at
least 1 - δ of seeded draws).

With fewer labelled cases than ``min_count``, or when the first test fails, the result is
*not certified*: there is no threshold, and nothing may be automated.

Only an unbiased sample of traffic may be certified on (cases reviewed while nothing was
automated, and QA samples of automated ones) — never only the low-confidence cases people
were asked about. That is the caller's duty; this module only sees numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import DatasetError, RecipeParameterError

__all__ = [
    "DEFAULT_DELTA",
    "DEFAULT_GRID",
    "DEFAULT_TARGET",
    "Certification",
    "certify",
    "default_min_count",
    "floor_min_count",
    "p_value",
]

DEFAULT_TARGET = 0.97
DEFAULT_DELTA = 0.1
# A grid fixed before seeing any data (LTT needs that): 0.999, 0.998, ..., 0.001, 0.000.
DEFAULT_GRID: tuple[float, ...] = tuple(round(i / 1000, 3) for i in range(999, -1, -1))
MAX_CASES = 10_000_000

Method = Literal["binomial", "hoeffding-bentkus"]
METHODS: tuple[str, ...] = ("binomial", "hoeffding-bentkus")


@dataclass(frozen=True)
class Certification:
    """The outcome of :func:`certify`, to keep with the model version it certifies.

    When ``certified`` is False, ``threshold`` is None, nothing may be automated, and
    ``reason`` says why. ``n_above``, ``errors`` and ``p_value`` describe the cases at or above
    the certified threshold (or, when not certified, at the threshold whose test failed first,
    if any was tested).
    """

    certified: bool
    threshold: float | None
    n: int
    n_above: int
    errors: int
    p_value: float | None
    target: float
    delta: float
    method: str
    min_count: int
    start: float | None
    reason: str | None = None
    #: How often the model is right at each confidence, fitted on the same cases
    #: (:func:`calibration_curve`): the points ``(confidences, probabilities)`` of an
    #: increasing curve, or None when there were too few cases to fit one.
    calibration: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def automated_share(self) -> float:
        """The share of the certification cases that the threshold automates."""
        return self.n_above / self.n if self.certified and self.n else 0.0

    def automates(self, confidence: float) -> bool:
        """Whether a decision at ``confidence`` may run without a person."""
        return self.threshold is not None and confidence >= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "certified": self.certified,
            "threshold": self.threshold,
            "n": self.n,
            "n_above": self.n_above,
            "errors": self.errors,
            "p_value": self.p_value,
            "target": self.target,
            "delta": self.delta,
            "method": self.method,
            "min_count": self.min_count,
            "start": self.start,
            "reason": self.reason,
            "calibration": None if self.calibration is None else [*map(list, self.calibration)],
        }


def p_value(errors: int, n: int, *, target: float, method: Method = "binomial") -> float:
    """The p-value of "precision < target" after ``errors`` errors among ``n`` cases."""
    if method not in METHODS:
        raise RecipeParameterError(
            f"method must be one of {', '.join(METHODS)}, not {str(method)[:40]!r}", "method"
        )
    return float(_p_values([errors], [n], target=target, method=method)[0])


def _p_values(errors: Any, counts: Any, *, target: float, method: str) -> Any:
    """:func:`p_value` over arrays of error counts and case counts (1 where a count is 0)."""
    import numpy as np
    from scipy.stats import binom

    alpha = 1.0 - target
    n = np.asarray(counts, dtype=float)
    k = np.asarray(errors, dtype=float)
    safe_n = np.maximum(n, 1)
    exact = binom.cdf(k, safe_n, alpha)
    if method == "hoeffding-bentkus":
        rate = np.minimum(k / safe_n, alpha)
        with np.errstate(divide="ignore", invalid="ignore"):
            first = np.where(rate > 0, rate * np.log(rate / alpha), 0.0)
        kl = first + (1 - rate) * np.log((1 - rate) / (1 - alpha))
        exact = np.minimum(np.minimum(np.exp(-safe_n * kl), np.e * exact), 1.0)
    return np.where(n > 0, exact, 1.0)


def default_min_count(
    target: float = DEFAULT_TARGET, delta: float = DEFAULT_DELTA, method: Method = "binomial"
) -> int:
    """Where the fixed sequence starts on a large calibration set: the smallest number of
    cases at which a model erring at a third of the allowed rate (precision 99% for a 97%
    target) passes the test with probability at least 0.9 (308 cases for 0.97, delta 0.1,
    binomial)."""
    return _passing_count(target, delta, method, 3)


def floor_min_count(
    target: float = DEFAULT_TARGET, delta: float = DEFAULT_DELTA, method: Method = "binomial"
) -> int:
    """The fewest cases the sequence starts at by default, however small the calibration set:
    where a model erring at a fifth of the allowed rate passes with probability at least 0.9
    (176 cases for 0.97, delta 0.1, binomial)."""
    return _passing_count(target, delta, method, 5)


def start_count(
    n: int,
    target: float = DEFAULT_TARGET,
    delta: float = DEFAULT_DELTA,
    method: Method = "binomial",
) -> int:
    """The count the sequence starts at by default for ``n`` calibration cases: half of them,
    within [:func:`floor_min_count`, :func:`default_min_count`]."""
    top = default_min_count(target, delta, method)
    return min(top, max(floor_min_count(target, delta, method), n // 2))


@functools.lru_cache(maxsize=64)
def _passing_count(target: float, delta: float, method: str, divisor: int) -> int:
    import numpy as np
    from scipy.stats import binom

    alpha = 1.0 - target
    for n in range(1, MAX_CASES):
        # The most errors among n cases that still pass (p-values grow with the errors).
        k = np.arange(n + 1)
        passing = np.flatnonzero(
            _p_values(k, np.full(n + 1, n), target=target, method=method) <= delta
        )
        if len(passing) and binom.cdf(passing[-1], n, alpha / divisor) >= 0.9:
            return n
    return MAX_CASES  # pragma: no cover - only for targets within 1e-6 of 1


def certify(
    confidences: Sequence[float],
    correct: Sequence[bool | int],
    *,
    target: float = DEFAULT_TARGET,
    delta: float = DEFAULT_DELTA,
    method: Method = "binomial",
    grid: Sequence[float] | None = None,
    min_count: int | None = None,
) -> Certification:
    """The lowest threshold of ``grid`` at which precision ≥ ``target`` holds with probability
    ≥ 1 - ``delta`` (Learn-then-Test, fixed sequence from the most confident threshold with
    at least ``min_count`` cases — by default :func:`start_count` of the number of cases; see
    the module's docstring for why it starts there).

    ``confidences[i]`` is the model's confidence in its decision on labelled case i, and
    ``correct[i]`` whether that decision matched the label; the cases must not have been
    trained on and must be an unbiased sample of the traffic to automate.
    """
    import numpy as np

    _check_level("target", target)
    _check_level("delta", delta)
    if method not in METHODS:
        raise RecipeParameterError(
            f"method must be one of {', '.join(METHODS)}, not {str(method)[:40]!r}", "method"
        )
    try:
        conf = np.asarray(confidences, dtype=float)
    except (TypeError, ValueError):
        raise DatasetError("confidences must be numbers between 0 and 1") from None
    if conf.ndim != 1:
        raise DatasetError("confidences must be a flat sequence of numbers")
    if len(correct) != len(conf):
        raise DatasetError(f"{len(conf)} confidences but {len(correct)} correctness values")
    if len(conf) > MAX_CASES:
        raise DatasetError(f"more than {MAX_CASES} cases")
    if not np.all(np.isfinite(conf)) or np.any(conf < 0) or np.any(conf > 1):
        raise DatasetError("confidences must be finite numbers between 0 and 1")
    if any(isinstance(c, bool) is False and c not in (0, 1) for c in correct):
        raise DatasetError("correctness values must be 0/1 or true/false")
    right = np.asarray([bool(c) for c in correct], dtype=bool)
    thresholds = _grid(grid)
    needed = start_count(len(conf), target, delta, method) if min_count is None else min_count
    if isinstance(needed, bool) or not isinstance(needed, int) or needed < 0:
        raise RecipeParameterError("min_count must be a non-negative integer", "min_count")

    n = len(conf)
    common: dict[str, Any] = {
        "n": n,
        "target": target,
        "delta": delta,
        "method": method,
        "min_count": needed,
        "calibration": calibration_curve(conf.tolist(), right.tolist()),
    }
    # Cases at or above each threshold, and errors among them, by sorting once.
    order = np.argsort(-conf, kind="stable")
    sorted_conf = conf[order]
    cum_errors = np.concatenate([[0], np.cumsum(~right[order])])
    counts = np.searchsorted(-sorted_conf, -thresholds, side="right")  # c >= λ  <=>  -c <= -λ
    errors = cum_errors[counts]

    start = next((i for i, count in enumerate(counts) if count >= max(needed, 1)), None)
    if needed == 0:
        start = 0
    if start is None:
        return Certification(
            certified=False,
            threshold=None,
            n_above=0,
            errors=0,
            p_value=None,
            start=None,
            reason=(
                f"too few labelled cases to certify: {n}, and at least {needed} are needed "
                f"to show precision >= {target} with risk {delta}; nothing is automated"
            ),
            **common,
        )
    # All p-values at once; the sequence then stops at the first one above delta.
    p_values = _p_values(errors[start:], counts[start:], target=target, method=method)
    failures = np.flatnonzero(p_values > delta)
    stop = start + int(failures[0]) if len(failures) else len(thresholds)
    passed: int | None = stop - 1 if stop > start else None
    failed_at = stop if stop < len(thresholds) else start
    last_p = float(p_values[(passed if passed is not None else failed_at) - start])
    start_threshold = float(thresholds[start])
    if passed is None:
        return Certification(
            certified=False,
            threshold=None,
            n_above=int(counts[failed_at]),
            errors=int(errors[failed_at]),
            p_value=last_p,
            start=start_threshold,
            reason=(
                f"precision >= {target} could not be shown at any threshold: at "
                f"{start_threshold:g}, {int(errors[failed_at])} error(s) among "
                f"{int(counts[failed_at])} cases (p = {last_p:.3g} > {delta}); "
                "nothing is automated"
            ),
            **common,
        )
    return Certification(
        certified=True,
        threshold=float(thresholds[passed]),
        n_above=int(counts[passed]),
        errors=int(errors[passed]),
        p_value=last_p,
        start=start_threshold,
        **common,
    )


#: The fewest cases a calibration curve is fitted on, and the most points it keeps.
MIN_CALIBRATION_CASES = 50
MAX_CALIBRATION_POINTS = 101


def calibration_curve(
    confidences: Sequence[float], correct: Sequence[bool | int]
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """How often the model was right at each confidence: an isotonic regression of
    correctness on confidence (scikit-learn's, as NannyML's CBPE calibrates), as the points
    ``(confidences, probabilities)`` of a piecewise-linear increasing curve. The cases must be
    an unbiased sample, or at least chosen by confidence alone: the curve is conditional on
    the confidence, so a sample that holds more low-confidence cases does not bias it. None
    below :data:`MIN_CALIBRATION_CASES` cases. At most :data:`MAX_CALIBRATION_POINTS`
    points, so the curve is a few numbers to keep beside the threshold, never the cases."""
    import numpy as np
    from sklearn.isotonic import IsotonicRegression

    conf = np.asarray(confidences, dtype=float)
    right = np.asarray(correct, dtype=float)
    if len(conf) < MIN_CALIBRATION_CASES or len(np.unique(conf)) < 2:
        return None
    fit = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    fit.fit(conf, right)
    xs = np.asarray(fit.X_thresholds_, dtype=float)
    if len(xs) > MAX_CALIBRATION_POINTS:
        xs = np.unique(np.quantile(conf, np.linspace(0.0, 1.0, MAX_CALIBRATION_POINTS)))
    ys = np.clip(fit.predict(xs), 0.0, 1.0)
    return tuple(round(float(x), 6) for x in xs), tuple(round(float(y), 6) for y in ys)


def calibrate(
    confidences: Sequence[float], curve: tuple[Sequence[float], Sequence[float]]
) -> list[float]:
    """``confidences`` mapped through a :func:`calibration_curve` (clipped at its ends)."""
    import numpy as np

    xs, ys = curve
    mapped = np.interp(np.asarray(confidences, dtype=float), xs, ys)
    return [float(v) for v in mapped]


def _check_level(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise RecipeParameterError(f"{name} must be a number strictly between 0 and 1", name)


def _grid(grid: Sequence[float] | None) -> Any:
    import numpy as np

    if grid is None:
        return np.asarray(DEFAULT_GRID, dtype=float)
    values = np.asarray(list(grid), dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise RecipeParameterError("the grid is a non-empty list of thresholds", "grid")
    if not np.all(np.isfinite(values)) or np.any(values < 0) or np.any(values > 1):
        raise RecipeParameterError("grid thresholds must be between 0 and 1", "grid")
    # Most confident first: the order the fixed sequence tests them in.
    return np.unique(values)[::-1]
