"""Training data as recipes see it: rows of (input text, label), with an optional time.

A :class:`Dataset` is the in-memory form a recipe trains on and an evaluation is measured on.
It is deliberately plain (tuples, no database handle): the retraining workflow will build one
from a stored, content-addressed dataset version, and tests build one from a CSV file. The
time column is kept so that a later split by time (train on the past, hold out the recent)
needs no other shape.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import DatasetError

__all__ = ["Dataset", "Label"]

# Labels are what a reviewer chooses; JSON scalars, so they travel in records unchanged.
Label = str | int

MAX_TEXT = 100_000  # characters: a kept case is a ticket or a form, not a book


@dataclass(frozen=True)
class Dataset:
    """Immutable rows of ``texts[i]`` labelled ``labels[i]`` (at ``times[i]``, epoch seconds).

    ``unbiased[i]`` says whether row i's case was put to a person independently of the
    model's confidence (a random sample of traffic): only such rows may certify a threshold.
    """

    texts: tuple[str, ...]
    labels: tuple[Label, ...]
    times: tuple[float, ...] | None = None
    unbiased: tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DatasetError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        if self.times is not None and len(self.times) != len(self.texts):
            raise DatasetError(f"{len(self.texts)} rows but {len(self.times)} times")
        if self.unbiased is not None and (
            len(self.unbiased) != len(self.texts)
            or not all(isinstance(u, bool) for u in self.unbiased)
        ):
            raise DatasetError(f"{len(self.texts)} rows need as many true/false unbiased flags")
        for i, text in enumerate(self.texts):
            if not isinstance(text, str):
                raise DatasetError(f"row {i}: the input is a {type(text).__name__}, not text")
            if len(text) > MAX_TEXT:
                raise DatasetError(f"row {i}: the input is longer than {MAX_TEXT} characters")
        for i, label in enumerate(self.labels):
            # bool is an int subclass, and True/1 would silently merge into one class.
            if isinstance(label, bool) or not isinstance(label, str | int):
                raise DatasetError(
                    f"row {i}: a label is a string or an integer, not {type(label).__name__}"
                )
        if len({type(label) for label in self.labels}) > 1:
            raise DatasetError("labels mix strings and integers; use one type for every row")
        if self.times is not None:
            for i, t in enumerate(self.times):
                if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
                    raise DatasetError(f"row {i}: the time is not a finite number of seconds")

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[object]]) -> Dataset:
        """From ``(text, label)`` or ``(text, label, time)`` rows (all rows the same shape)."""
        texts: list[str] = []
        labels: list[Label] = []
        times: list[float] = []
        width: int | None = None
        for i, row in enumerate(rows):
            if isinstance(row, str | bytes) or len(row) not in (2, 3):
                raise DatasetError(f"row {i}: a row is (text, label) or (text, label, time)")
            if width is None:
                width = len(row)
            elif len(row) != width:
                raise DatasetError(f"row {i} has {len(row)} columns, the first row {width}")
            texts.append(row[0])  # type: ignore[arg-type]  # checked in __post_init__
            labels.append(row[1])  # type: ignore[arg-type]
            if width == 3:
                times.append(row[2])  # type: ignore[arg-type]
        return cls(tuple(texts), tuple(labels), tuple(times) if width == 3 else None)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> list[Label]:
        """The distinct labels, sorted (by type name first, so 1 and "1" never compare)."""
        return sorted(set(self.labels), key=lambda v: (type(v).__name__, v))

    def counts(self) -> dict[str, int]:
        """Rows per label (keys as strings, so the mapping is JSON)."""
        return {str(k): n for k, n in sorted(Counter(map(str, self.labels)).items())}

    def subset(self, indices: Iterable[int]) -> Dataset:
        """The rows at ``indices``, in that order."""
        idx = list(indices)
        return Dataset(
            tuple(self.texts[i] for i in idx),
            tuple(self.labels[i] for i in idx),
            None if self.times is None else tuple(self.times[i] for i in idx),
            None if self.unbiased is None else tuple(self.unbiased[i] for i in idx),
        )

    def per_label(self, n: int, *, seed: int | None = None) -> Dataset:
        """At most ``n`` rows of each label: the first ones, or a random choice with ``seed``."""
        order = list(range(len(self)))
        if seed is not None:
            random.Random(seed).shuffle(order)
        seen: Counter[Label] = Counter()
        keep = []
        for i in order:
            if seen[self.labels[i]] < n:
                seen[self.labels[i]] += 1
                keep.append(i)
        return self.subset(sorted(keep) if seed is None else keep)
