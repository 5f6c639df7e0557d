"""What a retraining learns from: where its labelled data come from (:class:`TrainingData`,
by default the app's labels of kept cases) and how a dataset version is split into what
trains, what compares candidate and champion, and the reserve that certifies (:func:`split`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import DatasetError
from ..evolution.dataset import Dataset

if TYPE_CHECKING:
    from ..evolution.datasets import Datasets
    from ..evolution.labels import Labels

__all__ = [
    "DatasetRef",
    "LabelledCases",
    "Split",
    "TrainingData",
    "reserved",
    "split",
    "split_by_time",
]


class DatasetRef(Protocol):
    """A stored dataset version, as a retraining names it."""

    @property
    def digest(self) -> str: ...

    def __len__(self) -> int: ...


class TrainingData(Protocol):
    """Where a retraining gets its labels (the app's labels and dataset versions)."""

    def snapshot(self, model: str, *, tenant: str, actor: str) -> DatasetRef:
        """A dataset version of ``model``'s labels now (DatasetError when it has none)."""
        ...

    def training_data(self, digest: str, *, tenant: str) -> Dataset:
        """The version's rows as (text, label, time) a recipe trains on."""
        ...

    def label_count(self, model: str, *, tenant: str) -> int:
        """How many labels ``model``'s cases have (the every-N trigger counts them)."""
        ...


class LabelledCases:
    """The default :class:`TrainingData`: the app's labels of kept cases and its dataset
    versions (``app.labels``, ``app.datasets``); the text is each case's kept input."""

    def __init__(self, datasets: Callable[[], Datasets], labels: Callable[[], Labels]) -> None:
        self._datasets = datasets
        self._labels = labels

    def snapshot(self, model: str, *, tenant: str, actor: str) -> DatasetRef:
        return self._datasets().snapshot(model, tenant=tenant, actor=actor)

    def training_data(self, digest: str, *, tenant: str) -> Dataset:
        return self._datasets().training_data(digest, tenant=tenant)

    def label_count(self, model: str, *, tenant: str) -> int:
        return self._labels().count(tenant=tenant, model=model)


def split_by_time(data: Dataset, holdout: float, min_holdout: int) -> tuple[Dataset, Dataset]:
    """The oldest rows to train on and the newest ``holdout`` fraction (at least
    ``min_holdout`` rows) to evaluate on; rows without times keep their order (a dataset
    version lists them by labelling time). DatasetError when either side would be too
    small: the training side needs two labels, the holdout ``min_holdout`` rows."""
    n = len(data)
    n_holdout = max(min_holdout, math.ceil(n * holdout))
    if n - n_holdout < 2:
        raise DatasetError(
            f"dataset too small to split: {n} labelled rows, a holdout of {n_holdout} "
            f"(holdout {holdout:g}, at least {min_holdout}) leaves {max(n - n_holdout, 0)} "
            "to train on; wait for more labels or lower min_holdout"
        )
    times = data.times
    order = list(range(n)) if times is None else sorted(range(n), key=lambda i: (times[i], i))
    train, held = data.subset(order[: n - n_holdout]), data.subset(order[n - n_holdout :])
    if len(set(train.labels)) < 2:
        raise DatasetError(
            f"dataset too small to split: the {len(train)} oldest rows have one label only"
        )
    return train, held


@dataclass(frozen=True)
class Split:
    """How a retraining uses one dataset version.

    ``calibration``: the reserve, unbiased rows that no candidate ever trains on, the only
    rows a threshold is certified on (it may be empty: then nothing is certified).
    ``train``: every other row. ``evaluation``: what candidate and champion are compared
    on: the reserve once it has ``min_holdout`` rows; before, the newest rows by time, which
    are then left out of ``train``.
    """

    train: Dataset
    evaluation: Dataset
    calibration: Dataset

    @property
    def calibrated_on_evaluation(self) -> bool:
        return self.calibration is self.evaluation


def reserved(text: str, at: float | None, share: float) -> bool:
    """Whether an unbiased case belongs to the reserve: a stable hash of the case (its text
    and time) below ``share``, so the same case is in it at every retraining and no
    candidate, however late, has trained on a row another is certified on."""
    key = text if at is None else f"{at!r}\x00{text}"
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2**64


def split(data: Dataset, *, holdout: float, min_holdout: int, reserve: float) -> Split:
    """Split a dataset version for a retraining (see :class:`Split`). Certification never
    sees a row it was not an unbiased sample of, nor one the candidate trained on: the
    newest rows once automation began are the low-confidence ones people were asked about,
    so certifying on a split by time would overstate precision."""
    flags = data.unbiased or (False,) * len(data)
    times = data.times
    reserve_idx: list[int] = []
    rest_idx: list[int] = []
    for i, unbiased in enumerate(flags):
        at = None if times is None else times[i]
        (reserve_idx if unbiased and reserved(data.texts[i], at, reserve) else rest_idx).append(i)
    calibration, rest = data.subset(reserve_idx), data.subset(rest_idx)
    if len(calibration) >= min_holdout:
        if len(set(rest.labels)) < 2:
            raise DatasetError(
                f"dataset too small to split: {len(rest)} rows outside the reserve of "
                f"{len(calibration)} unbiased rows, with fewer than two labels; wait for "
                "more labels or lower reserve"
            )
        return Split(train=rest, evaluation=calibration, calibration=calibration)
    n_holdout = max(min_holdout, math.ceil(len(rest) * holdout))
    if len(rest) - n_holdout < 2:
        raise DatasetError(
            f"dataset too small to split: {len(data)} labelled rows, {len(calibration)} of "
            f"them in the unbiased reserve (fewer than min_holdout {min_holdout}); the other "
            f"{len(rest)} cannot hold out {n_holdout} (holdout {holdout:g}) and keep two to "
            "train on; wait for more labels or lower min_holdout"
        )
    train, evaluation = split_by_time(rest, holdout, min_holdout)
    return Split(train=train, evaluation=evaluation, calibration=calibration)
