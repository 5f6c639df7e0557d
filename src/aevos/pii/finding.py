"""What detection reports: a kind and a span, never the value."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of PII: its kind (``"EMAIL"``, ``"CREDIT_CARD"``...), span and confidence.

    ``start``/``end`` index the text that was passed in (``text[start:end]`` is the value).
    A finding deliberately does not carry the value, so findings can be logged, audited
    and returned from APIs without leaking what they point at.
    """

    kind: str
    start: int
    end: int
    score: float


@dataclass(frozen=True, slots=True)
class Redaction:
    """The redacted (or tokenised) text and the findings, with spans in the input text."""

    text: str
    findings: tuple[Finding, ...]

    @property
    def kinds(self) -> dict[str, int]:
        """How many findings of each kind, e.g. ``{"EMAIL": 2}`` (safe to log)."""
        counts: dict[str, int] = {}
        for finding in self.findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
        return counts
