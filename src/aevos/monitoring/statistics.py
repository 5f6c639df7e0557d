"""The statistics behind the monitors, with scipy.stats: each function compares a reference
sample with a window and says whether the difference is a drift, with its figures.

Every drift is judged by a test's p-value *and* an effect size, so a large window does not
flag differences too small to matter (with thousands of rows any difference is
"significant"), and a small one does not flag noise.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse, stats
from scipy.spatial.distance import jensenshannon

__all__ = [
    "LARGE_REFERENCE",
    "Finding",
    "confidence_drift",
    "estimated_accuracy",
    "prediction_drift",
    "proportion",
    "tabular_drift",
    "text_drift",
]

#: References of more rows than this are judged by distance alone (Evidently's switch).
LARGE_REFERENCE = 1000
#: Hashed token buckets of the text drift.
TOKEN_BUCKETS = 2048
_TOKEN = re.compile(r"\w+")
#: Resamples of the permutation tests: the smallest p-value one can give is 1/(n + 1). With
#: 199 a clear text drift could only reach 0.005, so one or two resamples above it put it at
#: the monitors' default 0.01 and no alert (a flaky test in CI); 499 reach 0.002. Predicted
#: classes are cheap to permute (a count of integers), so they get a finer p-value still.
_PERMUTATIONS = 499
_CLASS_PERMUTATIONS = 999


@dataclass(frozen=True)
class Finding:
    """A monitor's figure: ``value`` against ``threshold``, its p-value when a test gave
    one, whether it is an alert, and the figures behind it."""

    value: float
    threshold: float
    p_value: float | None
    alert: bool
    figures: dict[str, Any] = field(default_factory=dict)


def _js(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, so in [0, 1]) of two count vectors."""
    value = float(jensenshannon(np.asarray(p, float), np.asarray(q, float), base=2))
    return 0.0 if math.isnan(value) else value


def _chi2(reference: Sequence[int], window: Sequence[int]) -> tuple[float, float, int]:
    """(statistic, p-value, degrees of freedom) of the 2 x k contingency table."""
    table = np.array([reference, window], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0, 0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue), int(result.dof)


def _counts(
    reference: Sequence[str], window: Sequence[str]
) -> tuple[list[str], list[int], list[int]]:
    ref, win = Counter(reference), Counter(window)
    classes = sorted(set(ref) | set(win))
    return classes, [ref[c] for c in classes], [win[c] for c in classes]


# -- tabular inputs ----------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _feature(
    name: str, ref: list[Any], win: list[Any], small: bool, p_limit: float, distance: float
) -> dict[str, Any]:
    numeric = all(_is_number(v) for v in ref + win)
    if numeric:
        r, w = np.asarray(ref, float), np.asarray(win, float)
        spread = float(np.std(r))
        raw = float(stats.wasserstein_distance(r, w))
        # A constant reference: any move at all is a full-size drift.
        size = raw / spread if spread > 0 else (0.0 if raw == 0 else 1.0)
        p = float(stats.ks_2samp(r, w).pvalue) if small else None
        kind, test = "numeric", ("ks" if small else "wasserstein")
    else:
        _, rc, wc = _counts([str(v) for v in ref], [str(v) for v in win])
        size = _js(rc, wc)
        p = _chi2(rc, wc)[1] if small else None
        kind, test = "categorical", ("chi2" if small else "jensen_shannon")
    drifted = size >= distance and (p is None or p < p_limit)
    return {"kind": kind, "test": test, "p_value": p, "distance": size, "drifted": drifted}


def tabular_drift(
    reference: Sequence[Mapping[str, Any]],
    window: Sequence[Mapping[str, Any]],
    *,
    p_value: float = 0.05,
    distance: float = 0.1,
    drift_share: float = 0.5,
) -> Finding:
    """Input drift of dict inputs, feature by feature, after Evidently's defaults.

    A reference of at most :data:`LARGE_REFERENCE` rows: a numeric feature drifted when the
    two-sample Kolmogorov-Smirnov p-value is below ``p_value``, a categorical one when the
    chi-squared p-value is; *and*, in both cases, when the effect size reaches ``distance``
    (the Wasserstein distance divided by the reference's standard deviation, or the
    Jensen-Shannon distance). A larger reference: by the effect size alone. The inputs drifted
    when at least ``drift_share`` of the features did. Features holding anything but numbers
    are categorical (their values compared as strings); a feature with as many distinct
    values as rows (an identifier) is skipped.
    """
    small = len(reference) <= LARGE_REFERENCE
    names = sorted({k for row in reference for k in row})
    features: dict[str, dict[str, Any]] = {}
    skipped = []
    for name in names[:200]:
        ref = [row[name] for row in reference if row.get(name) is not None]
        win = [row[name] for row in window if row.get(name) is not None]
        if not ref or not win:
            skipped.append(name)
            continue
        numeric = all(_is_number(v) for v in ref)
        if not numeric and len({str(v) for v in ref}) > max(50, len(ref) // 2):
            skipped.append(name)
            continue
        features[name] = _feature(name, ref, win, small, p_value, distance)
    drifted = sorted(n for n, f in features.items() if f["drifted"])
    share = len(drifted) / len(features) if features else 0.0
    p_values = [f["p_value"] for f in features.values() if f["p_value"] is not None]
    return Finding(
        value=share,
        threshold=drift_share,
        p_value=min(p_values) if p_values else None,
        alert=bool(features) and share >= drift_share,
        figures={
            "kind": "tabular",
            "method": "ks/chi2 and effect size" if small else "wasserstein/jensen_shannon",
            "reference_rows": len(reference),
            "window_rows": len(window),
            "features": features,
            "drifted": drifted,
            "skipped": skipped,
        },
    )


# -- text inputs -------------------------------------------------------------------------------


def _token_matrix(texts: Sequence[str]) -> sparse.csr_matrix:
    """Texts x hashed token buckets, sparse: ten thousand texts stay a few megabytes."""
    rows, columns = [], []
    for i, text in enumerate(texts):
        for token in _TOKEN.findall(text.lower()):
            rows.append(i)
            # crc32, not hash(): the same bucket in every process.
            columns.append(zlib.crc32(token.encode()) % TOKEN_BUCKETS)
    counts = np.ones(len(rows))
    return sparse.csr_matrix((counts, (rows, columns)), shape=(len(texts), TOKEN_BUCKETS))


def text_drift(
    reference: Sequence[str],
    window: Sequence[str],
    *,
    p_value: float = 0.05,
    distance: float = 0.01,
) -> Finding:
    """Input drift of text: the Jensen-Shannon distance between the two samples' token
    distributions (tokens hashed into :data:`TOKEN_BUCKETS` buckets), tested by permutation
    (texts reassigned between the samples at random, ``scipy.stats.permutation_test``). Two
    finite samples of one distribution are never at distance 0, so the effect size is the
    distance *above* its mean under permutation (``noise``); a drift needs that excess at
    least ``distance`` and the permutation p-value below ``p_value``."""
    matrix = _token_matrix([*reference, *window])
    n_ref = len(reference)
    if matrix.shape[0] == 0 or matrix.nnz == 0:
        return Finding(0.0, distance, None, False, {"kind": "text", "reason": "no tokens"})

    def statistic(x: np.ndarray, y: np.ndarray) -> float:
        left = np.asarray(matrix[x.astype(int)].sum(axis=0)).ravel()
        right = np.asarray(matrix[y.astype(int)].sum(axis=0)).ravel()
        return _js(left, right)

    test = stats.permutation_test(
        (np.arange(n_ref), np.arange(n_ref, matrix.shape[0])),
        statistic,
        permutation_type="independent",
        vectorized=False,
        n_resamples=_PERMUTATIONS,
        alternative="greater",
        random_state=0,
    )
    observed = float(test.statistic)
    noise = float(np.mean(test.null_distribution))
    excess = observed - noise
    p = float(test.pvalue)
    return Finding(
        value=excess,
        threshold=distance,
        p_value=p,
        alert=p < p_value and excess >= distance,
        figures={
            "kind": "text",
            "method": "hashed-token jensen_shannon, permutation test",
            "distance": observed,
            "noise": noise,
            "reference_rows": n_ref,
            "window_rows": len(window),
        },
    )


# -- predictions and confidences ---------------------------------------------------------------


def prediction_drift(
    reference: Sequence[str],
    window: Sequence[str],
    *,
    p_value: float = 0.05,
    distance: float = 0.01,
    new_class_share: float = 0.02,
) -> Finding:
    """Drift of the predicted classes, each side tested by permutation (predictions
    reassigned between the samples at random, ``scipy.stats.permutation_test``), since with
    tens of classes and a few hundred calls most cells are too sparse for chi-squared and
    the Jensen-Shannon distance of two samples of one distribution is far from 0 (about 0.3
    for 67 classes, 500 against 200 calls):

    * the distance of the two class distributions, whose effect size is its excess over
      its mean under permutation (``noise``), as for text;
    * the window's share of classes the reference never predicted (the first sign of new
      intents), whose effect size is its excess over the share that chance gives.

    A drift needs either excess at least its threshold (``distance``, ``new_class_share``)
    with its p-value below ``p_value``. The classes the reference never predicted are named;
    the chi-squared statistic is kept as a figure."""
    if len(reference) < 2 or len(window) < 2:
        reason = "a permutation test needs two predictions on each side"
        return Finding(0.0, distance, None, False, {"reason": reason})
    classes, rc, wc = _counts(reference, window)
    index = {c: i for i, c in enumerate(classes)}
    codes = np.array([index[c] for c in [*reference, *window]], dtype=np.int64)
    n_ref, k = len(reference), len(classes)

    def split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.bincount(codes[x.astype(int)], minlength=k),
            np.bincount(codes[y.astype(int)], minlength=k),
        )

    def js(x: np.ndarray, y: np.ndarray) -> float:
        return _js(*split(x, y))

    def unseen(x: np.ndarray, y: np.ndarray) -> float:
        left, right = split(x, y)
        return float(right[left == 0].sum() / max(right.sum(), 1))

    sides = (np.arange(n_ref), np.arange(n_ref, len(codes)))
    tests = {
        name: stats.permutation_test(
            sides,
            statistic,
            permutation_type="independent",
            vectorized=False,
            n_resamples=_CLASS_PERMUTATIONS,
            alternative="greater",
            random_state=0,
        )
        for name, statistic in (("distance", js), ("new", unseen))
    }
    observed = float(tests["distance"].statistic)
    excess = observed - float(np.mean(tests["distance"].null_distribution))
    share = float(tests["new"].statistic)
    new_excess = share - float(np.mean(tests["new"].null_distribution))
    p_js, p_new = float(tests["distance"].pvalue), float(tests["new"].pvalue)
    shifted = p_js < p_value and excess >= distance
    emerged = p_new < p_value and new_excess >= new_class_share
    new = {c: n for c, r, n in zip(classes, rc, wc, strict=True) if r == 0 and n > 0}
    top = dict(sorted(new.items(), key=lambda item: (-item[1], item[0]))[:50])
    statistic, _, dof = _chi2(rc, wc)
    return Finding(
        value=excess,
        threshold=distance,
        p_value=min(p_js, p_new) if emerged and not shifted else p_js,
        alert=shifted or emerged,
        figures={
            "method": "jensen_shannon and unseen-class share, permutation tests",
            "js_distance": observed,
            "noise": observed - excess,
            "new_classes": top,
            "new_class_share": share,
            "new_class_excess": new_excess,
            "new_class_p_value": p_new,
            "chi2": statistic,
            "dof": dof,
            "reference_classes": sum(1 for r in rc if r),
            "window_classes": sum(1 for n in wc if n),
        },
    )


def confidence_drift(
    reference: Sequence[float],
    window: Sequence[float],
    *,
    p_value: float = 0.05,
    distance: float = 0.05,
) -> Finding:
    """Drift of the confidences: the two-sample Kolmogorov-Smirnov test and the Wasserstein
    distance (in confidence units, on [0, 1]); a drift needs both."""
    r, w = np.asarray(reference, float), np.asarray(window, float)
    ks = stats.ks_2samp(r, w)
    size = float(stats.wasserstein_distance(r, w))
    p = float(ks.pvalue)
    return Finding(
        value=size,
        threshold=distance,
        p_value=p,
        alert=p < p_value and size >= distance,
        figures={
            "ks": float(ks.statistic),
            "wasserstein": size,
            "reference_mean": float(r.mean()),
            "window_mean": float(w.mean()),
        },
    )


# -- rates ---------------------------------------------------------------------------------------


def proportion(successes: int, n: int, *, level: float = 0.95) -> tuple[float, float, float]:
    """(rate, low, high): the rate with its Wilson interval (``scipy.stats.binomtest``)."""
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return successes / n, float(ci.low), float(ci.high)


def estimated_accuracy(
    confidences: Sequence[float], *, level: float = 0.95
) -> tuple[float, float, float]:
    """(estimate, low, high): NannyML's CBPE for accuracy. When each confidence is the
    calibrated probability that its prediction is right, the number right is a
    Poisson-binomial variable: its mean over the window is the expected accuracy, with
    variance ``sum p(1 - p) / n**2``; the interval is its normal approximation. It assumes
    the model is calibrated on this traffic and that P(label | input) has not moved
    (no concept shift): a change the confidences cannot see is not estimated."""
    p = np.clip(np.asarray(confidences, float), 0.0, 1.0)
    estimate = float(p.mean())
    spread = math.sqrt(float((p * (1 - p)).sum())) / len(p)
    z = float(stats.norm.ppf(0.5 + level / 2))
    return estimate, max(0.0, estimate - z * spread), min(1.0, estimate + z * spread)
