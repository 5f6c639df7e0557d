"""Signed anchors: each chain's head, signed and published outside the database.

A hash chain names any record that was edited, inserted, moved or deleted in its middle, but
not its own truncation: deleting the newest records and moving the head row back leaves a
shorter chain that is perfectly consistent, and with write access to the database that takes
two statements, key or no key. An *anchor* is a signed statement "tenant T's chain had record
``seq`` with hash ``hash`` at ``signed_at``", written as a new file into a directory the
operator points at storage the database's administrators cannot rewrite (write-once, or
another host): the role of a Certificate Transparency log's signed tree head.
:meth:`AuditLog.verify <aevos.audit.AuditLog.verify>` checks the chain against the newest
anchor: the anchored record must still be there with the anchored hash, so a truncation
below it, or a rewrite at or before it, is named.

Anchors are signed with Ed25519: the signing key stays with the processes that write
anchors (workers, ``aevos audit anchor``), and a verifier needs only the public key, so an
auditor can check a chain, or an exported file, without being able to forge anchors.

Before signing a head the anchorer verifies the chain from the newest anchor on (the
anchored record still has its hash; every record after it is genuine, linked, and ends where
the head row says). Each anchor thus vouches for the ones before it, and a chain that was
truncated and has grown again is refused rather than anchored: checking the newest anchor
is enough.

Layout: ``<dir>/<tenant>/<seq, 20 digits>-<hash>.json``, one file per anchored head, never
overwritten. A name is a function of the head, so two workers anchoring the same head write
one file: the second finds it taken. Tenants that are not plain lowercase names are stored
under ``~`` and a digest of the name; each file names its tenant anyway.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
import re
import secrets
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import (
    AevosError,
    AuditAnchorError,
    AuditAnchorRefusedError,
    AuditSigningKeyError,
    AuditSigningKeyMissingError,
)
from .record import AuditHead, AuditProblem, VerifyReport

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

ANCHOR_DIR_ENV = "AEVOS_AUDIT_ANCHOR_DIR"
SIGNING_KEY_ENV = "AEVOS_AUDIT_SIGNING_KEY"
PUBLIC_KEY_ENV = "AEVOS_AUDIT_PUBLIC_KEY"
_FILE = "_FILE"  # AEVOS_AUDIT_SIGNING_KEY_FILE, AEVOS_AUDIT_PUBLIC_KEY_FILE: read from a path
_KEY_VARS = (SIGNING_KEY_ENV, SIGNING_KEY_ENV + _FILE, PUBLIC_KEY_ENV, PUBLIC_KEY_ENV + _FILE)

_TYPE = "aevos.audit.anchor"
_VERSION = 1
# Domain separation: a signature over an anchor can never pass for one over anything else.
_CONTEXT = b"aevos.audit.anchor.v1\n"
_FIELDS = frozenset(
    {"type", "version", "algorithm", "tenant", "seq", "hash", "signed_at", "key_id", "signature"}
)
_NAME = re.compile(r"^(\d{20})-([0-9a-f]{64})\.json$")
_PLAIN_TENANT = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")  # identity's tenant names
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MAX_FILE = 4096  # an anchor is ~400 bytes; a bigger file is not one
_MAX_INVALID = 100  # invalid files reported (and read) before the scan gives up
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _from_env(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """The value of ``name`` or of the file ``name_FILE`` names, and where it came from."""
    value, path = environ.get(name), environ.get(name + _FILE)
    if value and path:
        raise AuditSigningKeyError(f"set {name} or {name}{_FILE}, not both")
    if value:
        return value, name
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8"), f"{name}{_FILE} ({path})"
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise AuditSigningKeyError(f"cannot read {name}{_FILE} ({path}): {reason}") from None


# -- anchors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedAnchor:
    """A signed head of one tenant's chain; ``path`` is the file it was read from or
    written to."""

    tenant: str
    seq: int
    hash: str
    signed_at: datetime
    key_id: str
    signature: str
    path: Path | None = None

    @property
    def head(self) -> AuditHead:
        return AuditHead(self.seq, self.hash)

    def _fields(self) -> dict[str, Any]:
        return {
            "type": _TYPE,
            "version": _VERSION,
            "algorithm": "ed25519",
            "tenant": self.tenant,
            "seq": self.seq,
            "hash": self.hash,
            "signed_at": self.signed_at.isoformat(),
            "key_id": self.key_id,
        }

    def message(self) -> bytes:
        """The bytes the signature covers."""
        return _CONTEXT + _CANONICAL.encode(self._fields()).encode()

    def to_json(self) -> str:
        return _CANONICAL.encode({**self._fields(), "signature": self.signature}) + "\n"

    def describe(self) -> str:
        where = str(self.path) if self.path is not None else f"of seq {self.seq}"
        return f"anchor {where}"


@dataclass(frozen=True)
class InvalidAnchor:
    """A file in the anchor directory that is not a valid anchor, and why."""

    path: Path
    seq: int
    reason: str


@dataclass(frozen=True)
class AnchorScan:
    """What :meth:`AuditAnchors.newest` found for a tenant: its newest valid anchor (None if
    there is none) and the invalid files that claim to be newer."""

    tenant: str
    directory: Path
    anchor: SignedAnchor | None
    invalid: list[InvalidAnchor]

    def apply(self, report: VerifyReport) -> VerifyReport:
        """``report`` with the anchor it was checked against, and a problem per invalid
        anchor file (kind ``anchor_invalid``)."""
        extra = [
            AuditProblem(bad.seq, "anchor_invalid", f"{bad.path}: {bad.reason}")
            for bad in self.invalid
        ]
        problems = sorted([*report.problems, *extra], key=lambda problem: problem.seq)
        anchor = self.anchor
        return dataclasses.replace(
            report,
            ok=report.ok and not extra,
            problems=problems,
            anchor=None if anchor is None else anchor.head,
            anchor_file=None if anchor is None or anchor.path is None else str(anchor.path),
        )


@dataclass(frozen=True)
class AnchorOutcome:
    """The result of anchoring one tenant's chain: the newest anchor afterwards, and whether
    this call wrote it (False: the head was anchored already, or the chain is empty)."""

    tenant: str
    anchor: SignedAnchor | None
    written: bool
    error: AevosError | None = None


def anchor_parts(
    anchor: AuditHead | SignedAnchor | None,
) -> tuple[AuditHead | None, str, str | None]:
    """An anchor as verify takes it: the head, how messages name it, and its file."""
    if isinstance(anchor, SignedAnchor):
        path = None if anchor.path is None else str(anchor.path)
        return anchor.head, anchor.describe() if path else "the anchor", path
    return anchor, "the anchor", None


def tenant_directory(tenant: str) -> str:
    """The name of the tenant's sub-directory of an anchor directory."""
    if _PLAIN_TENANT.match(tenant):
        return tenant
    return "~" + hashlib.sha256(tenant.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def anchor_file_name(head: AuditHead) -> str:
    return f"{head.seq:020d}-{head.hash}.json"


class AuditAnchors:
    """A directory of signed anchors, with the keys to sign and check them.

    ``signing_key`` is needed to write anchors; checking them needs a public key, one of
    ``public_keys`` or the signing key's own. :meth:`from_env` reads
    ``AEVOS_AUDIT_ANCHOR_DIR`` and the keys (``AEVOS_AUDIT_SIGNING_KEY`` /
    ``AEVOS_AUDIT_PUBLIC_KEY``, or the files their ``_FILE`` variants name) when first
    needed, so a process that only appends to the log never fails for a key it does not use.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        signing_key: Ed25519PrivateKey | None = None,
        public_keys: Iterable[Ed25519PublicKey] = (),
    ) -> None:
        self.directory = Path(directory)
        self._signing: Ed25519PrivateKey | None = None
        self._public: dict[str, Ed25519PublicKey] = {}
        self._set_keys(signing_key, public_keys)
        self._env: dict[str, str] | None = None
        self._lock = threading.Lock()
        # The newest anchor seen per tenant, so that the anchorer does not list the
        # directory each time; verify always lists it.
        self._newest: dict[str, SignedAnchor] = {}

    def _set_keys(
        self, signing_key: Ed25519PrivateKey | None, public_keys: Iterable[Ed25519PublicKey]
    ) -> None:
        from .keys import key_id

        self._signing = signing_key
        for key in public_keys:
            self._public[key_id(key)] = key
        if signing_key is not None:
            self._public.setdefault(key_id(signing_key.public_key()), signing_key.public_key())

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
    ) -> AuditAnchors | None:
        """Anchors in ``directory`` (default ``AEVOS_AUDIT_ANCHOR_DIR``), keys from the
        environment; None when no directory is configured."""
        env = os.environ if environ is None else environ
        where = directory or env.get(ANCHOR_DIR_ENV)
        if not where:
            return None
        anchors = cls(where)
        anchors._env = {name: env[name] for name in _KEY_VARS if env.get(name)}
        return anchors

    def _keys(self) -> None:
        with self._lock:
            if self._env is None:
                return
            from .keys import load_public_keys, load_signing_key

            env = self._env
            signing = _from_env(env, SIGNING_KEY_ENV)
            public = _from_env(env, PUBLIC_KEY_ENV)
            self._set_keys(
                None if signing is None else load_signing_key(*signing),
                () if public is None else load_public_keys(*public),
            )
            self._env = None  # only once loaded: a bad key keeps raising, at every use

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        self._keys()
        if self._signing is None:
            raise AuditSigningKeyMissingError(
                f"no audit signing key to sign anchors with: set {SIGNING_KEY_ENV} or "
                f"{SIGNING_KEY_ENV}{_FILE} (make one with `aevos audit keygen`)"
            )
        return self._signing

    @property
    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """The keys anchors are checked with, by :func:`key_id`."""
        self._keys()
        if not self._public:
            raise AuditSigningKeyMissingError(
                f"no key to check the anchors in {self.directory} with: set {PUBLIC_KEY_ENV} "
                f"or {PUBLIC_KEY_ENV}{_FILE} (or the signing key)"
            )
        return dict(self._public)

    # -- writing -----------------------------------------------------------------------------

    def sign(self, tenant: str, head: AuditHead, *, at: datetime | None = None) -> SignedAnchor:
        """A signed anchor of ``head`` (not written anywhere)."""
        from .keys import key_id

        key = self.signing_key
        moment = (at or datetime.now(UTC)).astimezone(UTC)
        unsigned = SignedAnchor(tenant, head.seq, head.hash, moment, key_id(key.public_key()), "")
        signature = base64.b64encode(key.sign(unsigned.message())).decode()
        return dataclasses.replace(unsigned, signature=signature)

    def write(self, tenant: str, head: AuditHead) -> tuple[SignedAnchor, bool]:
        """Sign ``head`` into a new file; ``(anchor, True)``, or ``(the existing anchor,
        False)`` when that head is anchored already. Never overwrites a file."""
        if head.seq < 1 or not _HEX64.match(head.hash):
            raise AuditAnchorError(f"cannot anchor {head}: not the head of a chain")
        self._require_directory()
        folder = self.directory / tenant_directory(tenant)
        path = folder / anchor_file_name(head)
        if not path.exists():
            anchor = self.sign(tenant, head)
            try:
                written = _write_once(folder, path.name, anchor.to_json().encode())
            except OSError as exc:
                raise AuditAnchorError(
                    f"cannot write anchor {path}: {exc.strerror or type(exc).__name__}"
                ) from None
            if written:
                anchor = dataclasses.replace(anchor, path=path)
                self._remember(anchor)
                return anchor, True
        existing = self._check(path, tenant)
        if isinstance(existing, InvalidAnchor):
            raise AuditAnchorError(
                f"{path} exists but is not a valid anchor ({existing.reason}); it cannot be "
                "replaced (write-once): the next head gets its own file"
            )
        self._remember(existing)
        return existing, False

    def _require_directory(self) -> None:
        # Never created here: a missing directory is a typo or a write-once volume that is
        # not mounted, and anchors written beneath an empty mount point would be lost.
        if not self.directory.is_dir():
            raise AuditAnchorError(
                f"anchor directory {self.directory} does not exist: create it (or mount the "
                "write-once volume there)"
            )

    def _remember(self, anchor: SignedAnchor) -> None:
        with self._lock:
            known = self._newest.get(anchor.tenant)
            if known is None or anchor.seq > known.seq:
                self._newest[anchor.tenant] = anchor

    # -- reading -----------------------------------------------------------------------------

    def newest(self, tenant: str) -> AnchorScan:
        """The tenant's newest valid anchor, reading its files from the newest down.

        Files that claim to be newer than it but are not valid anchors (altered, signed by
        an unknown key, renamed, unreadable) are listed as invalid. Names that are not
        anchor names are ignored (temporary files of an interrupted write among them).
        """
        keys = self.public_keys  # before anything else: a verifier without a key must fail
        self._require_directory()
        folder = self.directory / tenant_directory(tenant)
        try:
            names = sorted((n for n in os.listdir(folder) if _NAME.match(n)), reverse=True)
        except FileNotFoundError:
            names = []
        except OSError as exc:
            raise AuditAnchorError(f"cannot list {folder}: {exc.strerror}") from None
        invalid: list[InvalidAnchor] = []
        for name in names:
            found = self._check(folder / name, tenant, keys)
            if isinstance(found, SignedAnchor):
                self._remember(found)
                return AnchorScan(tenant, folder, found, invalid)
            invalid.append(found)
            if len(invalid) >= _MAX_INVALID:
                break
        return AnchorScan(tenant, folder, None, invalid)

    def latest(self, tenant: str) -> SignedAnchor | None:
        """The newest anchor this object wrote or read for ``tenant``, else the newest in the
        directory (None if it has none)."""
        with self._lock:
            known = self._newest.get(tenant)
        if known is not None:
            return known
        return self.newest(tenant).anchor

    def read(self, path: str | os.PathLike[str], tenant: str | None = None) -> SignedAnchor:
        """The anchor in ``path``, checked (signature, name, tenant if given)."""
        found = self._check(Path(path), tenant)
        if isinstance(found, InvalidAnchor):
            raise AuditAnchorError(f"{found.path} is not a valid anchor: {found.reason}")
        return found

    def _check(
        self, path: Path, tenant: str | None, keys: Mapping[str, Ed25519PublicKey] | None = None
    ) -> SignedAnchor | InvalidAnchor:
        keys = self.public_keys if keys is None else keys
        match = _NAME.match(path.name)
        claimed = int(match.group(1)) if match else 0

        def bad(reason: str) -> InvalidAnchor:
            return InvalidAnchor(path, claimed, reason)

        try:
            with path.open("rb") as file:
                data = file.read(_MAX_FILE + 1)
        except OSError as exc:
            return bad(f"cannot be read ({exc.strerror or type(exc).__name__})")
        if len(data) > _MAX_FILE:
            return bad(f"larger than {_MAX_FILE} bytes: not an anchor")
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return bad("not JSON (an incomplete or altered file)")
        if not isinstance(value, dict) or set(value) != _FIELDS:
            return bad("not an anchor: its fields are not those of an aevos anchor")
        if (value["type"], value["version"], value["algorithm"]) != (_TYPE, _VERSION, "ed25519"):
            return bad("not a version 1 Ed25519 aevos anchor")
        seq, digest, signature = value["seq"], value["hash"], value["signature"]
        if type(seq) is not int or seq < 1 or not isinstance(digest, str):
            return bad("its seq or hash is malformed")
        if not all(isinstance(value[k], str) for k in ("tenant", "signed_at", "key_id")):
            return bad("its tenant, signed_at or key_id is malformed")
        try:
            signed_at = datetime.fromisoformat(value["signed_at"])
            raw_signature = base64.b64decode(signature, validate=True)
        except (ValueError, TypeError, binascii.Error):
            return bad("its signed_at or signature is malformed")
        if signed_at.tzinfo is None:
            return bad("its signed_at has no time zone")
        anchor = SignedAnchor(
            value["tenant"], seq, digest, signed_at, value["key_id"], signature, path
        )
        key = keys.get(anchor.key_id)
        if key is None:
            known = ", ".join(sorted(keys))
            return bad(f"signed by key {anchor.key_id[:16]!r}, not by a known key ({known})")
        from .keys import signature_valid

        if not signature_valid(key, raw_signature, anchor.message()):
            return bad("its signature does not verify: the file was altered or forged")
        # Signed, but is it in its place? A genuine anchor copied under another name or
        # tenant would otherwise vouch for a head it never saw.
        if tenant is not None and anchor.tenant != tenant:
            return bad(f"a genuine anchor of tenant {anchor.tenant[:64]!r}, filed under {tenant!r}")
        if match is not None and path.name != anchor_file_name(anchor.head):
            return bad(f"a genuine anchor of seq {seq}, renamed")
        return anchor


def _write_once(folder: Path, name: str, data: bytes) -> bool:
    """Create ``folder/name`` holding ``data``, durably; False if the name is taken.

    The content goes to a temporary file first (fsynced), then is linked to its name: the
    name appears whole or not at all, and a link never replaces an existing file. Read-only
    mode (0444), which some write-once stores take as the signal to commit a file.
    """
    folder.mkdir(exist_ok=True)
    final = folder / name
    temporary = folder / f".{name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    _write_file(temporary, data, flags)
    try:
        try:
            os.link(temporary, final)
        except FileExistsError:
            return False
        except OSError:
            # A file system without hard links: create the name exclusively instead (never
            # replacing a file; a crash mid-write leaves a partial file verify reports).
            try:
                _write_file(final, data, flags)
            except FileExistsError:
                return False
    finally:
        temporary.unlink(missing_ok=True)
    _sync_directory(folder)
    return True


def _write_file(path: Path, data: bytes, flags: int) -> None:
    fd = os.open(path, flags, 0o444)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_directory(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open a directory (Windows): nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- anchoring chains ------------------------------------------------------------------------


class Chains(Protocol):
    """What anchoring reads of the audit log (:class:`~aevos.audit.AuditLog`)."""

    @property
    def anchors(self) -> AuditAnchors | None: ...

    def head(self, tenant: str) -> AuditHead | None: ...

    def heads(self) -> dict[str, AuditHead]: ...

    def verify(
        self,
        tenant: str,
        *,
        since: AuditHead | SignedAnchor | None = None,
        use_anchors: bool = True,
        max_problems: int = 1000,
    ) -> VerifyReport: ...


def _anchors_of(log: Chains) -> AuditAnchors:
    if log.anchors is None:
        raise AuditAnchorError(
            f"no anchor directory: set {ANCHOR_DIR_ENV} (or pass --anchor-dir, or give the "
            "AuditLog anchors=AuditAnchors(...))"
        )
    return log.anchors


def anchor_chain(log: Chains, tenant: str, head: AuditHead | None = None) -> AnchorOutcome:
    """Sign ``tenant``'s current head into the log's anchor directory, if it moved.

    The chain is verified from the newest anchor on first (from seq 1 if there is none); a
    chain that does not verify, or no longer reaches that anchor with its hash, is refused
    with :class:`~aevos.errors.AuditAnchorRefusedError` naming the first problem. ``head``,
    when the caller just read it, saves work when it is already anchored.
    """
    anchors = _anchors_of(log)
    anchors.signing_key  # noqa: B018 - fail before verifying anything if there is none
    previous = anchors.latest(tenant)
    if head is None:
        head = log.head(tenant)
    if head is None or head.seq == 0:
        return AnchorOutcome(tenant, previous, False)
    if previous is not None and previous.head == head:
        return AnchorOutcome(tenant, previous, False)
    if previous is None:
        report = log.verify(tenant, use_anchors=False, max_problems=10)
    else:
        report = log.verify(tenant, since=previous, max_problems=10)
    if not report.ok or report.head is None:
        first = report.problems[0] if report.problems else None
        why = "the chain has no head row" if first is None else f"{first.kind} at seq {first.seq}"
        more = len(report.problems) + report.omitted - 1
        raise AuditAnchorRefusedError(
            f"tenant {tenant!r}: head not anchored, the chain does not verify: {why}"
            + ("" if first is None else f": {first.detail}")
            + (f" (and {more} more problem(s): run `aevos audit verify`)" if more > 0 else "")
        )
    anchor, written = anchors.write(tenant, report.head)
    return AnchorOutcome(tenant, anchor, written)


def anchor_all(log: Chains, tenants: Sequence[str] | None = None) -> list[AnchorOutcome]:
    """Anchor the heads of ``tenants`` (default: every chain) that moved since their newest
    anchor. A tenant that fails does not stop the others: its outcome carries the error."""
    anchors = _anchors_of(log)
    anchors.signing_key  # noqa: B018 - one clear error rather than one per tenant
    heads = log.heads()
    outcomes: list[AnchorOutcome] = []
    for tenant in sorted(heads) if tenants is None else tenants:
        try:
            outcomes.append(anchor_chain(log, tenant, heads.get(tenant)))
        except AevosError as exc:
            outcomes.append(AnchorOutcome(tenant, None, False, exc))
    return outcomes
