"""Certification records: a version's certified threshold, kept, audited and served.

:func:`~aevos.evolution.certify.certify` decides; :class:`Certifications` keeps what it
decided for a model version (``app.certifications``): the figures (n, errors, threshold or
none, p-value, target, δ, method) and the digest of the dataset version it used, never the
cases, appended in one transaction with its ``model.certified`` audit record. The latest
record of a version is the one in force: the gateway stamps every answer of that version
with its threshold (``CallResult.certified_threshold`` and ``CallResult.certified``), the
console's model page shows it, and ``GET /v1/models/{name}/versions/{v}/certification``
returns it. A version never certified, or whose latest certification certified nothing, has
no threshold: nothing it answers is automated.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..audit import AuditEvent
from ..errors import DefinitionError, check_limit
from ..identity import check_tenant
from ..records.certification import CertificationRecord
from .certify import (
    DEFAULT_DELTA,
    DEFAULT_TARGET,
    MAX_CALIBRATION_POINTS,
    Certification,
    Method,
    certify,
)

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..models.registry import ModelRegistry
    from ..storage import Store

__all__ = ["Certifications"]

#: A dataset version's digest, as the datasets service names it ("sha256:<hex>" or bare hex).
_DIGEST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,99}$")
MAX_HISTORY = 1000


class Certifications:
    """Record and read certifications of model versions (``app.certifications``).

    ``on_recorded(tenant, model, version)`` is told after each record commits: the app
    uses it to drop this process's cached threshold of that version at once (other
    processes see it when their cache entry expires: ``Gateway(certification_ttl=...)``).
    """

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        registry: ModelRegistry,
        on_recorded: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.registry = registry
        self.on_recorded = on_recorded

    def record(
        self,
        model: str,
        version: int,
        certification: Certification,
        *,
        dataset: str | None = None,
        tenant: str = "default",
        actor: str = "system",
    ) -> CertificationRecord:
        """Keep ``certification`` as the one in force for ``model@version`` (of ``tenant``):
        appended with its ``model.certified`` audit record (the figures and the dataset's
        digest, never data) in one transaction. ``dataset`` is the digest of the dataset
        version the labelled cases came from. ModelNotFoundError if there is no such version.
        """
        if not isinstance(certification, Certification):
            raise DefinitionError(
                f"record takes a Certification (from certify), not {type(certification).__name__}"
            )
        check_tenant(tenant)
        if not isinstance(actor, str) or not 0 < len(actor) <= 300:
            raise DefinitionError("actor must be a string of 1 to 300 characters")
        if dataset is not None and (not isinstance(dataset, str) or not _DIGEST.match(dataset)):
            raise DefinitionError(
                "dataset is a dataset version's digest: 1 to 100 letters, digits and ':._-'"
            )
        _check_figures(certification)
        number = self.registry.get(model, _number(version), tenant=tenant).version
        draft = CertificationRecord(
            id=0,
            tenant=tenant,
            model=model,
            version=number,
            target=float(certification.target),
            delta=float(certification.delta),
            method=certification.method,
            n=certification.n,
            errors=certification.errors,
            threshold=certification.threshold if certification.certified else None,
            p_value=certification.p_value,
            dataset=dataset,
            created_by=actor,
            created_at=time.time(),
            evidence={
                "n_above": certification.n_above,
                "min_count": certification.min_count,
                "start": certification.start,
                "reason": certification.reason,
                **(
                    {}
                    if certification.calibration is None
                    else {"calibration": [*map(list, certification.calibration)]}
                ),
            },
        )
        with self.store.transaction() as uow:
            stored = uow.certifications.insert(draft)
            figures = stored.to_json()
            for key in ("tenant", "created_by", "created_at"):
                figures.pop(key)
            self.audit.append(
                AuditEvent(
                    action="model.certified",
                    actor=actor,
                    tenant=tenant,
                    subject=f"model:{model}@{number}",
                    data=figures,
                ),
                uow=uow,
            )
        if self.on_recorded is not None:
            self.on_recorded(tenant, model, number)
        return stored

    def certify(
        self,
        model: str,
        version: int,
        confidences: Sequence[float],
        correct: Sequence[bool | int],
        *,
        dataset: str | None = None,
        target: float = DEFAULT_TARGET,
        delta: float = DEFAULT_DELTA,
        method: Method = "binomial",
        min_count: int | None = None,
        tenant: str = "default",
        actor: str = "system",
    ) -> CertificationRecord:
        """Certify ``model@version`` on labelled cases it did not train on (its confidence
        in each and whether it was right; an unbiased sample of traffic) and
        :meth:`record` the result, certified or not."""
        self.registry.get(model, _number(version), tenant=tenant)  # 404 before the work
        certification = certify(
            confidences, correct, target=target, delta=delta, method=method, min_count=min_count
        )
        return self.record(
            model, version, certification, dataset=dataset, tenant=tenant, actor=actor
        )

    def latest(
        self, model: str, version: int, *, tenant: str = "default"
    ) -> CertificationRecord | None:
        """The certification in force for ``model@version``; None if it was never
        certified. ModelNotFoundError if there is no such version."""
        number = self.registry.get(model, _number(version), tenant=tenant).version
        with self.store.reading() as uow:
            return uow.certifications.latest(tenant, model, number)

    def latest_by_version(
        self, model: str, *, tenant: str = "default"
    ) -> dict[int, CertificationRecord]:
        """The certification in force of each certified version of ``model``, by version."""
        self.registry.versions(model, tenant=tenant)  # ModelNotFoundError for an unknown model
        with self.store.reading() as uow:
            return uow.certifications.latest_by_version(tenant, model)

    def history(
        self,
        model: str,
        *,
        version: int | None = None,
        tenant: str = "default",
        limit: int = 100,
    ) -> list[CertificationRecord]:
        """Certifications of ``model`` (of one ``version``), newest first, at most ``limit``."""
        check_limit(limit, MAX_HISTORY)
        if version is None:
            self.registry.versions(model, tenant=tenant)
            number = None
        else:
            number = self.registry.get(model, _number(version), tenant=tenant).version
        with self.store.reading() as uow:
            return uow.certifications.history(tenant, model, version=number, limit=limit)


def _curve(curve: object) -> bool:
    if not isinstance(curve, tuple | list) or len(curve) != 2:
        return False
    xs, ys = curve
    if not isinstance(xs, tuple | list) or not isinstance(ys, tuple | list):
        return False
    if not 2 <= len(xs) == len(ys) <= MAX_CALIBRATION_POINTS:
        return False
    values = [*xs, *ys]
    if not all(isinstance(v, int | float) and math.isfinite(v) and 0 <= v <= 1 for v in values):
        return False
    return all(a < b for a, b in itertools.pairwise(xs))


def _number(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DefinitionError(f"a version is a number from 1, not {version!r}")
    return version


def _check_figures(c: Certification) -> None:
    """A Certification built by hand (not by certify) must still be one a person can trust."""
    problems = []
    if not (0 < c.target < 1 and 0 < c.delta < 1):
        problems.append("target and delta must be strictly between 0 and 1")
    if c.n < 0 or c.errors < 0 or c.n_above < 0 or c.errors > max(c.n_above, 0) or c.n_above > c.n:
        problems.append("counts must satisfy 0 <= errors <= n_above <= n")
    if c.certified != (c.threshold is not None):
        problems.append("a certified certification has a threshold, an uncertified one none")
    if c.threshold is not None and not (math.isfinite(c.threshold) and 0 <= c.threshold <= 1):
        problems.append("the threshold must be between 0 and 1")
    if c.p_value is not None and not (math.isfinite(c.p_value) and 0 <= c.p_value <= 1):
        problems.append("the p-value must be between 0 and 1")
    if c.calibration is not None and not _curve(c.calibration):
        problems.append(
            f"a calibration curve is 2 to {MAX_CALIBRATION_POINTS} points (confidence, "
            "probability) between 0 and 1, confidences increasing"
        )
    if not isinstance(c.method, str) or not 0 < len(c.method) <= 32:
        problems.append("method must be a name of 1 to 32 characters")
    if problems:
        raise DefinitionError("not a valid certification: " + "; ".join(problems))
