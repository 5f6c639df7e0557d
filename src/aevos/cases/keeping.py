"""The kept-cases service: seal a case, keep it with what it belongs to, read and forget it.

Sealing (:meth:`KeptCases.seal`) happens where the case is made (the gateway for a model
call, the human-task service for a task) and returns a row that the caller writes in its
own unit of work: inside a workflow the case commits with the step that made the call and
its audit records, or not at all. Reading decrypts with the tenant's key; a row copied to
another tenant, or under another case id, does not open (the key is per tenant and the
associated data names tenant and case id).

Without a vault key there is no key to encrypt with: cases are not kept (never stored in
plain text), and the first case that could not be kept logs one warning per service.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import codec
from ..audit import AuditEvent
from ..errors import CaseInputError, CaseNotFoundError, CorruptDatabaseError, check_limit
from ..identity import check_tenant
from ..pii.datapolicy import tokens_in
from ..pii.vault import ENV_VAR, TOKEN
from ..policy import CaseRetention
from ..storage.cases import CaseRow

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..pii.vault import Sealer, Vault
    from ..storage import Store, UnitOfWork

log = logging.getLogger("aevos.cases")

PURPOSE = "cases/v1"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_JSON, _BYTES = b"J", b"B"  # what the plaintext holds: canonical JSON, or raw bytes
_KINDS = ("model_call", "task")
_MAX_ID = 230
_SWEEP_BATCH = 500


@dataclass(frozen=True)
class NewCase:
    """A case to keep, as its maker knows it; ``input`` before the data policy."""

    tenant: str
    case_id: str
    kind: str  # model_call | task
    input: Any
    model: str | None = None
    version: int | None = None
    run_id: str | None = None
    seq: int | None = None
    call_id: str | None = None
    task_id: str | None = None
    workflow: str | None = None  # whose data policy applies (None: the app's)
    #: The digest of what the model was given (a model call's audit ``input_sha256``).
    model_input_digest: str | None = None


@dataclass(frozen=True)
class KeptCase:
    """A kept case, decrypted: ``input`` as kept (tokenised by the data policy; reveal its
    tokens only where ``pii:reveal`` allows), ``input_digest`` its SHA-256, and
    ``model_input_digest`` the digest of what the model was given (the ``model.called``
    record's ``input_sha256``; the same unless the model saw more than may be kept)."""

    case_id: str
    tenant: str
    kind: str
    model: str | None
    version: int | None
    run_id: str | None
    seq: int | None
    call_id: str | None
    task_id: str | None
    input: Any
    input_digest: str
    created_at: float
    expires_at: float | None
    model_input_digest: str | None = None

    def to_dict(self, *, include_input: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "case_id": self.case_id,
            "tenant": self.tenant,
            "kind": self.kind,
            "model": self.model,
            "version": self.version,
            "run_id": self.run_id,
            "seq": self.seq,
            "call_id": self.call_id,
            "task_id": self.task_id,
            "input_digest": self.input_digest,
            "model_input_digest": self.model_input_digest,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }
        if include_input:
            data["input"] = self.input
        return data


def _aad(tenant: str, case_id: str) -> bytes:
    return "\x00".join(("aevos-case", tenant, case_id)).encode()


def _check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID or "\x00" in value:
        raise CaseInputError(f"{what} must be a string of 1 to {_MAX_ID} characters")
    return value


class KeptCases:
    """Seals, keeps, reads and forgets the cases of one store.

    ``vault`` returns the app's vault, or None when no key is set; ``retention`` the
    :class:`~aevos.policy.CaseRetention` a model's ``model_call`` policy declares (None:
    the default, kept 90 days); ``protect(tenant, workflow, value)`` applies the data
    policy of ``workflow`` (the app's when None) to a value before it is kept.
    """

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        *,
        vault: Callable[[], Vault | None],
        retention: Callable[[str], CaseRetention | None] | None = None,
        protect: Callable[[str, str | None, Any], Any] | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self._vault = vault
        self._retention = retention
        self._protect = protect
        self._sealer: Sealer | None = None
        self._sealer_of: Vault | None = None
        self._warned = False
        self._lock = threading.Lock()
        self.not_kept = 0  # cases that could not be kept for want of a vault key

    # -- keeping ---------------------------------------------------------------------------

    def retention_of(self, model: str | None) -> CaseRetention:
        """Whether ``model``'s cases are kept, and how long (its policy's, or the default)."""
        if model is not None and self._retention is not None:
            declared = self._retention(model)
            if declared is not None:
                return declared
        return CaseRetention()

    def sealer(self) -> Sealer | None:
        """The sealer of the current vault key; None (warned once) without one."""
        vault = self._vault()
        if vault is None:
            with self._lock:
                self.not_kept += 1
                warn, self._warned = not self._warned, True
            if warn:
                log.warning(
                    "kept cases are off: %s is not set, and cases are never stored "
                    "unencrypted; set a vault key to keep what models and people see",
                    ENV_VAR,
                )
            return None
        if self._sealer is None or self._sealer_of is not vault:
            self._sealer, self._sealer_of = vault.sealer(PURPOSE), vault
        return self._sealer

    def seal(self, case: NewCase, *, now: float | None = None) -> CaseRow | None:
        """The encrypted row of ``case``, for the caller to write with what made it
        (``uow.cases.add``); None when it is not kept (its policy says so, or there is no
        vault key). The data policy is applied first: what is kept is tokenised."""
        if case.kind not in _KINDS:
            raise CaseInputError(f"a case's kind is one of {', '.join(_KINDS)}")
        _check_id(case.case_id, "case_id")
        retention = self.retention_of(case.model)
        if not retention.keep:
            return None
        sealer = self.sealer()
        if sealer is None:
            return None
        kept = case.input
        if self._protect is not None:
            kept = self._protect(case.tenant, case.workflow, kept)
        canonical = codec.canonical_input(kept)
        if isinstance(canonical, bytes):
            plain, digest_of = _BYTES + canonical, canonical
            subjects: tuple[str, ...] = ()
        else:
            digest_of = canonical.encode()
            plain = _JSON + digest_of
            subjects = tuple(sorted(tokens_in(kept))) if "tok_" in canonical else ()
        moment = time.time() if now is None else now
        seconds = retention.seconds
        return CaseRow(
            tenant=case.tenant,
            case_id=case.case_id,
            kind=case.kind,
            input_digest=hashlib.sha256(digest_of).hexdigest(),
            ciphertext=sealer.seal(case.tenant, plain, _aad(case.tenant, case.case_id)),
            created_at=moment,
            expires_at=None if seconds is None else moment + seconds,
            model=case.model,
            version=case.version,
            run_id=case.run_id,
            seq=case.seq,
            call_id=case.call_id,
            task_id=case.task_id,
            model_input_digest=case.model_input_digest,
            subjects=subjects,
        )

    def keep(self, case: NewCase) -> KeptCase | None:
        """Seal and keep ``case`` in a unit of work of its own; None when not kept."""
        row = self.seal(case)
        if row is None:
            return None
        with self.store.transaction() as uow:
            uow.cases.add([row])
        return self.get(row.case_id, tenant=row.tenant)

    # -- reading ---------------------------------------------------------------------------

    def _open(self, row: CaseRow) -> KeptCase:
        sealer = self._vault_sealer()
        plain = sealer.open(row.tenant, row.ciphertext, _aad(row.tenant, row.case_id))
        if plain is None:
            # Another key, or a row moved between tenants or ids: never someone else's data.
            raise CorruptDatabaseError(
                f"kept case {row.case_id!r} does not decrypt with tenant {row.tenant!r}'s key "
                f"(the vault key changed, or the row was moved)"
            )
        value: Any = plain[1:] if plain[:1] == _BYTES else codec.decode(plain[1:].decode())
        return KeptCase(
            case_id=row.case_id,
            tenant=row.tenant,
            kind=row.kind,
            model=row.model,
            version=row.version,
            run_id=row.run_id,
            seq=row.seq,
            call_id=row.call_id,
            task_id=row.task_id,
            input=value,
            input_digest=row.input_digest,
            created_at=row.created_at,
            expires_at=row.expires_at,
            model_input_digest=row.model_input_digest,
        )

    def _vault_sealer(self) -> Sealer:
        vault = self._vault()
        if vault is None:
            from ..errors import VaultKeyError

            raise VaultKeyError(f"reading kept cases needs the vault key ({ENV_VAR} is not set)")
        if self._sealer is None or self._sealer_of is not vault:
            self._sealer, self._sealer_of = vault.sealer(PURPOSE), vault
        return self._sealer

    def get(self, case_id: str, *, tenant: str) -> KeptCase:
        """The tenant's case ``case_id``, decrypted; :class:`CaseNotFoundError` if it has
        none (another tenant's id included, or one forgotten)."""
        check_tenant(tenant)
        _check_id(case_id, "case_id")
        with self.store.reading() as uow:
            row = uow.cases.get(tenant, case_id)
        if row is None:
            raise CaseNotFoundError(f"no kept case {case_id!r} in tenant {tenant!r}")
        return self._open(row)

    def find(
        self,
        *,
        tenant: str,
        model: str | None = None,
        run_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[KeptCase]:
        """The tenant's cases, oldest first, of ``model`` / ``run_id`` and made in
        [``since``, ``until``) when given; at most ``limit`` (1 to 1000)."""
        check_tenant(tenant)
        check_limit(limit, MAX_LIMIT, CaseInputError)
        for what, moment in (("since", since), ("until", until)):
            if moment is not None and (
                isinstance(moment, bool) or not isinstance(moment, int | float)
            ):
                raise CaseInputError(f"{what} is a time in epoch seconds")
        if model is not None:
            _check_id(model, "model")
        if run_id is not None:
            _check_id(run_id, "run_id")
        with self.store.reading() as uow:
            rows = uow.cases.find(
                tenant, model=model, run_id=run_id, since=since, until=until, limit=limit
            )
        return [self._open(row) for row in rows]

    def open_many(self, tenant: str, case_ids: Sequence[str]) -> dict[str, KeptCase]:
        """``case_id -> KeptCase`` for the tenant's cases among ``case_ids`` (unknown ids,
        another tenant's included, are absent)."""
        check_tenant(tenant)
        with self.store.reading() as uow:
            rows = uow.cases.get_many(tenant, [_check_id(i, "case_id") for i in case_ids])
        return {row.case_id: self._open(row) for row in rows}

    # -- forgetting ------------------------------------------------------------------------

    def forget_run(self, run_id: str, *, tenant: str, actor: str = "system") -> int:
        """Delete every case of run ``run_id`` in the tenant; how many. Audited
        (``case.forgotten``, with the count) in the same transaction."""
        check_tenant(tenant)
        _check_id(run_id, "run_id")
        return self._forget(
            tenant, actor, "run_id", run_id, lambda uow: uow.cases.delete_run(tenant, run_id)
        )

    def forget_subject(self, token: str, *, tenant: str, actor: str = "system") -> int:
        """Delete every case of the tenant whose kept input mentions the data subject
        ``token`` (a vault token, ``tok_...``, alone or as ``<KIND:tok_...>``); how many.
        Audited (``case.forgotten``: the token and the count, never content)."""
        check_tenant(tenant)
        match = TOKEN.fullmatch(token) if isinstance(token, str) else None
        bare = match.group("token") if match else token
        if not isinstance(bare, str) or TOKEN.fullmatch(f"<X:{bare}>") is None:
            raise CaseInputError("a data subject is a vault token: tok_ and 24 letters")
        return self._forget(
            tenant, actor, "subject", bare, lambda uow: uow.cases.delete_subject(tenant, bare)
        )

    def _forget(
        self,
        tenant: str,
        actor: str,
        key: str,
        value: str,
        delete: Callable[[UnitOfWork], int],
    ) -> int:
        with self.store.transaction() as uow:
            count = delete(uow)
            self.audit.append(
                AuditEvent(
                    action="case.forgotten",
                    actor=actor,
                    tenant=tenant,
                    subject=f"run:{value}" if key == "run_id" else f"subject:{value}",
                    run_id=value if key == "run_id" else None,
                    data={key: value, "deleted": count},
                ),
                uow=uow,
            )
        return count

    def sweep_expired(self, *, now: float | None = None, batch: int = _SWEEP_BATCH) -> int:
        """Delete one bounded batch of cases whose retention has ended; how many. Workers
        call this between claims; a full batch means more are due (the next sweep takes
        them). Each tenant's deletions are audited (``case.expired``, with the count)."""
        moment = time.time() if now is None else now
        with self.store.transaction() as uow:
            deleted = uow.cases.delete_expired(moment, batch)
            if deleted:
                self.audit.append_many(
                    [
                        AuditEvent(
                            action="case.expired",
                            actor="system:retention",
                            tenant=tenant,
                            subject="cases",
                            data={"deleted": count, "before": moment},
                        )
                        for tenant, count in sorted(deleted.items())
                        if count
                    ],
                    uow=uow,
                )
        return sum(deleted.values())
