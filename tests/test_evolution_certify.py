"""Certified automation thresholds: the guarantee, MAPIE's agreement, and refusals.

Synthetic cases have a known precision: confidence c ~ Uniform(0, 1) and the model is right
with probability g(c) = base + (1 - base) * c**k, so the precision of everything at or above
a threshold t is base + (1 - base) * (1 - t**(k+1)) / ((k+1) * (1 - t)), exactly.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from aevos.errors import DatasetError, RecipeParameterError
from aevos.evolution import Certification, certify, p_value
from aevos.evolution.certify import (
    DEFAULT_GRID,
    calibrate,
    calibration_curve,
    default_min_count,
    floor_min_count,
    start_count,
)


def true_precision(t: float, base: float, k: float) -> float:
    if t >= 1:
        return 1.0
    return base + (1 - base) * (1 - t ** (k + 1)) / ((k + 1) * (1 - t))


def draw(rng: np.random.Generator, n: int, base: float, k: float) -> tuple[np.ndarray, np.ndarray]:
    confidences = rng.uniform(size=n)
    correct = rng.uniform(size=n) < base + (1 - base) * confidences**k
    return confidences, correct


@settings(max_examples=6, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    # Models good enough to be certified at 2,000 cases, and some that are not.
    base=st.floats(0.8, 0.97),
    k=st.floats(0.5, 6.0),
)
def test_the_certified_precision_holds_in_at_least_1_minus_delta_of_draws(
    seed: int, base: float, k: float
) -> None:
    draws, delta, target = 150, 0.1, 0.97
    rng = np.random.default_rng(seed)
    violations = certified = 0
    for _ in range(draws):
        result = certify(*draw(rng, 2000, base, k), target=target, delta=delta)
        if result.certified:
            certified += 1
            assert result.threshold is not None
            violations += true_precision(result.threshold, base, k) < target
    # Valid at delta: violations are at most Binomial(draws, delta); the bound fails a
    # correct procedure with probability 1e-4 per example.
    assert violations <= binom.ppf(1 - 1e-4, draws, delta), (violations, certified)


def test_a_good_model_is_certified_where_its_precision_is() -> None:
    rng = np.random.default_rng(7)
    base, k = 0.9, 2.0
    result = certify(*draw(rng, 3000, base, k))
    assert result.certified and result.threshold is not None
    assert true_precision(result.threshold, base, k) >= 0.97
    # ... and not absurdly conservative: the exact frontier is t where precision = 0.97.
    frontier = next(t for t in DEFAULT_GRID[::-1] if true_precision(t, base, k) >= 0.97)
    assert result.threshold - frontier < 0.1
    assert result.errors <= result.n_above and 0 < result.automated_share < 1
    assert result.automates(result.threshold) and not result.automates(result.threshold - 1e-3)
    assert result.p_value is not None and result.p_value <= 0.1
    assert result.p_value == pytest.approx(
        p_value(result.errors, result.n_above, target=0.97), rel=1e-12
    )
    assert result.to_json()["threshold"] == result.threshold


def test_too_few_labels_certify_nothing() -> None:
    rng = np.random.default_rng(1)
    confidences, correct = draw(rng, 100, 0.99, 1.0)
    result = certify(confidences, correct)
    assert isinstance(result, Certification)
    assert not result.certified and result.threshold is None and result.p_value is None
    assert result.n == 100 and result.min_count == floor_min_count() == 176
    assert result.reason is not None and "too few labelled cases" in result.reason
    assert not result.automates(1.0) and result.automated_share == 0.0
    # All right, but 75 cases can never show 0.97 at delta 0.1: 0.97**75 > 0.1.
    short = certify([0.99] * 75, [True] * 75, min_count=1)
    assert not short.certified and short.p_value == pytest.approx(0.97**75)
    enough = certify([0.99] * 76 + [0.2] * 20, [True] * 76 + [False] * 20, min_count=1)
    # Every threshold above 0.2 holds the same 76 right cases; at 0.2 the 20 errors join.
    assert enough.certified and enough.threshold == 0.201 and enough.n_above == 76


def test_a_model_below_target_everywhere_is_not_certified() -> None:
    rng = np.random.default_rng(2)
    confidences = rng.uniform(size=2000)
    correct = rng.uniform(size=2000) < 0.9  # 90% right whatever the confidence
    result = certify(confidences, correct)
    assert not result.certified and result.threshold is None
    assert result.reason is not None and "could not be shown" in result.reason
    assert result.p_value is not None and result.p_value > 0.1


def test_starting_where_enough_cases_exist_keeps_one_confident_error_from_stopping_all() -> None:
    # 400 cases at 0.95 with two errors; the single most confident case (0.999) is wrong.
    confidences = [0.999] + [0.95] * 400 + [0.3] * 100
    correct = [False] + [True] * 398 + [False, False] + [False] * 100
    plain = certify(confidences, correct, min_count=0)  # LTT from the top of the grid
    assert not plain.certified and plain.start == 0.999
    counted = certify(confidences, correct)
    assert counted.certified and counted.threshold == 0.301 and counted.errors == 3
    assert counted.start == 0.95


def test_a_small_calibration_set_starts_at_half_its_cases_but_never_below_the_floor() -> None:
    assert default_min_count() == 308 and floor_min_count() == 176
    assert [start_count(n) for n in (100, 352, 400, 615, 616, 5000)] == [
        176,
        176,
        200,
        307,
        308,
        308,
    ]
    # 400 cases: the 200 most confident are right, the next 108 hold 12 errors. Starting at
    # 308 cases, the first test (12 errors among 308, p ~ 0.85) fails and nothing is
    # automated; starting at half the set, the 200 confident cases are certified.
    confidences = [0.9] * 200 + [0.8] * 108 + [0.2] * 92
    correct = [True] * 200 + [True] * 96 + [False] * 12 + [False] * 92
    fixed = certify(confidences, correct, min_count=308)
    assert not fixed.certified and fixed.start == 0.8
    adaptive = certify(confidences, correct)
    assert adaptive.min_count == 200 and adaptive.start == 0.9
    assert adaptive.certified and adaptive.threshold == 0.801 and adaptive.n_above == 200


def test_hoeffding_bentkus_is_valid_but_looser() -> None:
    rng = np.random.default_rng(3)
    confidences, correct = draw(rng, 5000, 0.95, 2.0)
    # From the same start: the looser bound needs more cases, so its own default starts lower.
    start = default_min_count(method="hoeffding-bentkus")
    exact = certify(confidences, correct, min_count=start)
    hb = certify(confidences, correct, method="hoeffding-bentkus", min_count=start)
    assert exact.certified and hb.certified
    assert exact.threshold is not None and hb.threshold is not None
    assert hb.threshold >= exact.threshold and hb.method == "hoeffding-bentkus"
    assert default_min_count(method="hoeffding-bentkus") > default_min_count()
    for errors, n in [(0, 100), (3, 200), (10, 300)]:
        hb_p = p_value(errors, n, target=0.97, method="hoeffding-bentkus")
        assert hb_p >= p_value(errors, n, target=0.97) * (1 - 1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_thresholds_agree_with_mapie_learn_then_test(seed: int) -> None:
    """MAPIE's BinaryClassificationController with fixed-sequence testing is the same
    procedure as ``certify(min_count=0)``: the same p-values (up to a rounding in MAPIE, below)
    tested in the same order, so the same thresholds are valid."""
    from mapie.risk_control import BinaryClassificationController
    from mapie.risk_control.fwer_control import control_fwer

    rng = np.random.default_rng(seed)
    confidences, correct = draw(rng, 1500, 0.8 + 0.02 * seed, 1.0 + seed)
    grid = np.round(np.linspace(0, 0.99, 100), 2)
    controller = BinaryClassificationController(
        predict_function=lambda x: np.column_stack([1 - x, x]),
        risk="precision",
        target_level=0.97,
        confidence_level=0.9,
        list_predict_params=grid,
        fwer_method="fixed_sequence",
    )
    with warnings.catch_warnings():
        # MAPIE warns when the empirical precision is not monotone in the threshold.
        warnings.simplefilter("ignore", UserWarning)
        controller.calibrate(confidences, correct.astype(int))
    ours = certify(confidences, correct, grid=grid, min_count=0)

    counts = np.array([(confidences >= t).sum() for t in grid])
    errors = np.array([(~correct[confidences >= t]).sum() for t in grid])
    mine = np.array(
        [p_value(int(e), int(n), target=0.97) for e, n in zip(errors, counts, strict=True)]
    )
    theirs = np.asarray(controller.p_values).ravel()
    has = counts > 0
    # MAPIE counts errors as ceil(n * (1 - precision)) in floating point, which can round one
    # error up (1 - 147/150 = 0.020000000000000018, times 150 -> 4 errors instead of 3); its
    # p-value is then min(Hoeffding, exact binomial) at that count, between the exact tails at
    # our count and at one more. Otherwise the p-values are the same numbers.
    alpha = 1 - 0.97
    at_k = binom.cdf(errors[has], counts[has], alpha)
    at_k_plus_1 = binom.cdf(errors[has] + 1, counts[has], alpha)
    assert np.allclose(mine[has], at_k, rtol=1e-12)
    same = np.isclose(theirs[has], at_k, rtol=1e-9, atol=0)
    rounded_up = (theirs[has] > at_k) & (theirs[has] <= at_k_plus_1 * (1 + 1e-9))
    assert np.all(same | rounded_up)
    assert same.mean() > 0.5

    # The same fixed sequence: MAPIE's procedure run on our p-values (most confident first)
    # certifies exactly the thresholds we do, and its lowest is our threshold.
    order = np.argsort(-grid)
    valid = grid[order][control_fwer(mine[order], 0.1, fwer_method="fixed_sequence")]
    if len(valid) == 0:
        assert not ours.certified
    else:
        assert ours.certified and ours.threshold == pytest.approx(float(valid.min()))
    # MAPIE's own answer, with its rounding, is never more permissive than ours, and equal
    # when the rounding does not flip a test.
    if controller.best_predict_param is None:
        assert not ours.certified or not np.array_equal(mine <= 0.1, theirs <= 0.1)
    else:
        assert ours.threshold is not None and controller.best_predict_param >= ours.threshold
        if np.array_equal(mine[has] <= 0.1, theirs[has] <= 0.1):
            assert controller.best_predict_param == pytest.approx(ours.threshold)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"target": 1.0}, RecipeParameterError, "target must be a number strictly between"),
        ({"delta": 0}, RecipeParameterError, "delta must be"),
        ({"method": "normal"}, RecipeParameterError, "method must be one of"),
        ({"min_count": -1}, RecipeParameterError, "min_count"),
        ({"grid": []}, RecipeParameterError, "non-empty"),
        ({"grid": [0.5, 1.5]}, RecipeParameterError, "between 0 and 1"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        certify([0.5, 0.6], [True, False], **kwargs)  # type: ignore[arg-type]


def test_bad_cases_are_refused() -> None:
    with pytest.raises(DatasetError, match="2 confidences but 1"):
        certify([0.5, 0.6], [True])
    with pytest.raises(DatasetError, match="between 0 and 1"):
        certify([0.5, float("nan")], [True, True])
    with pytest.raises(DatasetError, match="between 0 and 1"):
        certify([1.5], [True])
    with pytest.raises(DatasetError, match="numbers between 0 and 1"):
        certify(["high"], [True])  # type: ignore[list-item]
    with pytest.raises(DatasetError, match="0/1"):
        certify([0.5], [2])
    assert DatasetError("x").code == "invalid_dataset"


def test_the_calibration_curve_maps_confidence_to_how_often_the_model_was_right() -> None:
    rng = np.random.default_rng(4)
    conf = rng.uniform(0.2, 1.0, 5000)
    right = rng.uniform(size=5000) < conf**2  # overconfident: right conf**2 of the time
    curve = calibration_curve(conf.tolist(), right.tolist())
    assert curve is not None
    xs, ys = curve
    assert 2 <= len(xs) <= 101 and list(xs) == sorted(set(xs))
    assert list(ys) == sorted(ys) and ys[0] >= 0.0 and ys[-1] <= 1.0
    grid = [0.3, 0.5, 0.7, 0.9]
    assert np.allclose(calibrate(grid, curve), np.square(grid), atol=0.06)
    assert calibrate([0.0, 1.0], curve) == [ys[0], ys[-1]]  # clipped at its ends
    # The mean of the mapped confidences is the expected accuracy (what CBPE estimates).
    assert abs(np.mean(calibrate(conf.tolist(), curve)) - right.mean()) < 0.01
    # Too few cases, or a single confidence, fit no curve; certify keeps what it fitted.
    assert calibration_curve([0.5] * 40, [True] * 40) is None
    assert calibration_curve([0.7] * 200, [True] * 200) is None
    assert certify(conf.tolist(), right.tolist()).calibration == curve
    assert certify([0.9] * 10, [True] * 10).calibration is None
