"""Detection engines: the built-in recogniser set, behind an interface Presidio also fits."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from ..errors import PiiConfigError
from .base import Recognizer, compact
from .finding import Finding
from .recognizers import default_recognizers


@runtime_checkable
class Engine(Protocol):
    """What :class:`~aevos.pii.Redactor` needs from a detection backend.

    ``analyze`` receives *normalised* text and returns non-overlapping findings sorted by
    start, with spans in that text; ``canonical`` spells a found value one way (tokens and
    ``<KIND_n>`` numbering are keyed by it, so "4111 1111..." and "4111-1111..." match).
    """

    @property
    def kinds(self) -> frozenset[str]: ...

    def analyze(self, text: str) -> list[Finding]: ...

    def canonical(self, kind: str, value: str) -> str: ...


def resolve(findings: Iterable[Finding]) -> list[Finding]:
    """Drop overlaps: higher score wins, then the longer span, then the earlier one."""
    ranked = sorted(findings, key=lambda f: (-f.score, f.start - f.end, f.start))
    starts: list[int] = []
    ends: list[int] = []
    kept: list[Finding] = []
    for f in ranked:
        i = bisect_right(starts, f.start)
        if i and ends[i - 1] > f.start:
            continue
        if i < len(starts) and starts[i] < f.end:
            continue
        starts.insert(i, f.start)
        ends.insert(i, f.end)
        kept.insert(i, f)
    return kept


class RecognizerEngine:
    """The default engine: dependency-free recognisers with checksums (see ``recognizers``).

    ``recognizers`` replaces the default set; ``extra`` adds to it (for instance
    :func:`~aevos.pii.national_id` recognisers).
    """

    def __init__(
        self,
        recognizers: Iterable[Recognizer] | None = None,
        *,
        extra: Iterable[Recognizer] = (),
    ) -> None:
        chosen = [*(default_recognizers() if recognizers is None else recognizers), *extra]
        for r in chosen:
            if not isinstance(r, Recognizer):
                raise PiiConfigError(
                    f"{type(r).__name__} is not a recogniser: it needs kinds, contextual, "
                    "find(text, prior) and canonical(kind, value)"
                )
        self._plain = [r for r in chosen if not r.contextual]
        self._contextual = [r for r in chosen if r.contextual]
        self._by_kind: dict[str, Recognizer] = {}
        for r in chosen:
            for kind in r.kinds:
                self._by_kind.setdefault(kind, r)
        self._kinds = frozenset(self._by_kind)

    @property
    def kinds(self) -> frozenset[str]:
        return self._kinds

    def analyze(self, text: str) -> list[Finding]:
        found = [f for r in self._plain for f in r.find(text, ())]
        if not self._contextual:
            return resolve(found)
        strong = resolve(found)
        found = strong + [f for r in self._contextual for f in r.find(text, strong)]
        return resolve(found)

    def canonical(self, kind: str, value: str) -> str:
        recognizer = self._by_kind.get(kind)
        return compact(value) if recognizer is None else recognizer.canonical(kind, value)


class CombinedEngine:
    """Several engines as one: findings are pooled and overlaps resolved as usual.

    Typical use keeps the hardened default set and adds Presidio for what only it has
    (more national IDs, person names when a spaCy model with NER is installed)::

        Redactor(CombinedEngine(RecognizerEngine(), PresidioEngine(entities={...})))

    ``canonical`` is answered by the first engine that knows the kind.
    """

    def __init__(self, *engines: Engine) -> None:
        if not engines:
            raise PiiConfigError("CombinedEngine needs at least one engine")
        self.engines = engines
        self._kinds = frozenset().union(*(e.kinds for e in engines))

    @property
    def kinds(self) -> frozenset[str]:
        return self._kinds

    def analyze(self, text: str) -> list[Finding]:
        return resolve(f for e in self.engines for f in e.analyze(text))

    def canonical(self, kind: str, value: str) -> str:
        for e in self.engines:
            if kind in e.kinds:
                return e.canonical(kind, value)
        return compact(value)
