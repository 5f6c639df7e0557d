"""The model registry: immutable, content-addressed versions with cards, tags and aliases.

In the manner of MLflow. A version is ``name@N``: its artifact bytes (stored once, in the
content-addressed blob table, under their sha256), a flavor saying how to load them, the
adapter config, a model card and a signature; none of which ever changes. Tags are mutable
metadata on a version. Aliases (``champion``, ``challenger``, ...) are movable names for
versions; each remembers where it pointed before its last move, so rolling back is one
UPDATE and never touches an artifact. ``latest`` is reserved: the highest version.

Every write locks the model's row first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already serialises writers), so concurrent registrations number their
versions 1, 2, 3... without gaps or collisions, and the audit record of a change commits in
the same transaction as the change itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from .. import codec
from ..audit import AuditEvent
from ..errors import (
    ArtifactIntegrityError,
    DefinitionError,
    ModelNotFoundError,
    NoPreviousVersionError,
    RunNotFoundError,
    SerializationError,
    UnknownPartError,
)
from ..identity import check_tenant
from . import flavors
from .artifact import is_pickle
from .types import ModelAdapter, ModelCard, ModelVersion

if TYPE_CHECKING:
    from ..audit import AuditEvent, AuditLog
    from ..storage import Store, UnitOfWork

__all__ = ["LATEST", "ModelAlias", "ModelRegistry", "card_from_dict", "card_to_dict", "split_ref"]

LATEST = "latest"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,99}")
_FLAVOR = re.compile(r"[a-z][a-z0-9_.-]{0,49}")
_MAX_TAG_KEY, _MAX_TAG_VALUE, _MAX_ACTOR = 100, 500, 200
# Every audit action the registry records; lineage reads them back.
_ACTIONS = (
    "model.registered",
    "model.alias_moved",
    "model.promoted",
    "model.rolled_back",
    "model.tagged",
    "model.trusted_load",
)
_ALIAS_ACTIONS = frozenset({"model.alias_moved", "model.promoted", "model.rolled_back"})
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class ModelAlias:
    """Where an alias points, where it pointed before its last move, and who moved it."""

    name: str
    alias: str
    version: int
    previous_version: int | None
    updated_by: str
    updated_at: float


# -- validation and encoding -----------------------------------------------------------------


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DefinitionError(
            f"model name {str(name)[:80]!r} must be 1-200 characters of letters, digits, "
            "'_', '.', '-', starting with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise DefinitionError(
            f"alias {str(alias)[:80]!r} must match [a-z][a-z0-9_-]{{0,99}} "
            "(e.g. champion, challenger, canary-2)"
        )
    if alias == LATEST:
        raise DefinitionError("alias 'latest' is reserved: it always names the highest version")
    return alias


def _check_actor(by: str) -> str:
    if not isinstance(by, str) or not 0 < len(by) <= _MAX_ACTOR:
        raise DefinitionError(f"the actor must be a string of 1 to {_MAX_ACTOR} characters")
    return by


def _check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DefinitionError(f"a version is a positive integer, not {version!r}")
    return version


def _check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(tags, Mapping):
        raise DefinitionError(f"tags must be a mapping of str to str, not {type(tags).__name__}")
    for key, value in tags.items():
        if not isinstance(key, str) or not 0 < len(key) <= _MAX_TAG_KEY:
            raise DefinitionError(f"tag key {str(key)[:80]!r} must be 1-{_MAX_TAG_KEY} characters")
        if not isinstance(value, str) or len(value) > _MAX_TAG_VALUE:
            raise DefinitionError(
                f"tag {key!r} must have a string value of at most {_MAX_TAG_VALUE} characters"
            )
    return dict(tags)


def _json(value: Any, what: str) -> str:
    """Canonical JSON (sorted keys): equal configs give equal text, which identity relies on."""
    try:
        return _CANONICAL.encode(value)
    except (TypeError, ValueError):
        codec.encode(value, what)  # raises with the path to the culprit
        raise SerializationError(f"{what} is not JSON-serialisable") from None


def card_to_dict(card: ModelCard) -> dict[str, Any]:
    """A card as JSON values (the shape stored, shown by the CLI and returned by lineage)."""
    data = asdict(card)
    data["metrics"] = dict(card.metrics)
    return data


_CARD_FIELDS = {f.name for f in fields(ModelCard)}


def card_from_dict(data: Mapping[str, Any], *, strict: bool = True) -> ModelCard:
    """A card from its JSON form. ``strict`` refuses unknown fields and wrong types (input
    from people); stored cards load leniently, so a newer writer's extra fields are skipped.
    """
    if not isinstance(data, Mapping):
        raise DefinitionError(f"a model card is a JSON object, not {type(data).__name__}")
    unknown = sorted(set(data) - _CARD_FIELDS)
    if unknown and strict:
        raise DefinitionError(
            f"unknown model card field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_CARD_FIELDS))}"
        )
    values = {key: data[key] for key in _CARD_FIELDS if key in data}
    card = ModelCard(**values)
    if strict:
        _check_card(card)
    return card


def _check_card(card: ModelCard) -> None:
    if not isinstance(card, ModelCard):
        raise DefinitionError(f"card must be a ModelCard, not {type(card).__name__}")
    for name in ("intended_use", "owner", "training_data", "limitations"):
        if not isinstance(getattr(card, name), str):
            raise DefinitionError(f"model card field {name} must be a string")
    if card.training_run_id is not None and not isinstance(card.training_run_id, str):
        raise DefinitionError("model card field training_run_id must be a string (a run id)")
    metrics = card.metrics
    if not isinstance(metrics, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
        for k, v in metrics.items()
    ):
        raise DefinitionError("model card metrics must map metric names to numbers")


def split_ref(text: str, default: int | str = LATEST) -> tuple[str, int | str]:
    """``"name@3"`` -> ``("name", 3)``, ``"name@champion"`` -> ``("name", "champion")``,
    ``"name"`` -> ``("name", default)``."""
    name, sep, ref = text.partition("@")
    if not sep:
        return name, default
    if not ref:
        raise DefinitionError(f"{text!r}: give a version, an alias or 'latest' after '@'")
    return name, int(ref) if ref.isdigit() else ref


def _subject(name: str, version: int) -> str:
    return f"model:{name}@{version}"


# -- the registry ----------------------------------------------------------------------------


class ModelRegistry:
    """Registers, resolves and loads model versions of every tenant in one store.

    ``audit`` receives a record of every registration, alias move, promotion, rollback,
    tag change and trusted load, in the transaction that makes the change; without one,
    nothing is recorded (and :meth:`lineage` has no history). Loaded adapters are cached
    per artifact digest, flavor and config (``cache_size`` of them, least recently used
    evicted); the cache is safe to share between threads.
    """

    def __init__(
        self, store: Store, audit: AuditLog | None = None, *, cache_size: int = 32
    ) -> None:
        self.store = store
        self.audit = audit
        self._cache: OrderedDict[tuple[str, str, str, bool], ModelAdapter] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._loading: dict[tuple[str, str, str, bool], threading.Lock] = {}

    # -- registering -------------------------------------------------------------------------

    def register(
        self,
        name: str,
        artifact: bytes,
        *,
        flavor: str,
        config: Mapping[str, Any] | None = None,
        card: ModelCard | None = None,
        signature: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        tenant: str = "default",
        created_by: str = "system",
        aliases: Iterable[str] = (),
        parts: Mapping[str, bytes] | Iterable[bytes] = (),
    ) -> ModelVersion:
        """Store ``artifact`` as the next version of ``name`` and point ``aliases`` at it.

        For a composite flavor (``composite``), ``artifact`` is a manifest naming its parts
        by sha256 and ``parts`` are their bytes (or ``{digest: bytes}``): they are stored in
        the blob store in the same transaction as the version. A part the manifest names
        but that is neither given nor already stored is an
        :class:`~aevos.errors.UnknownPartError`; the flavor checks the whole (parts of a
        mean with different classes are an :class:`~aevos.errors.InvalidCompositeError`).

        Content-addressed: if ``name`` already has a version with the same artifact digest,
        flavor and config, that version is returned (and ``aliases`` moved to it) instead of
        a new one; its card, tags and signature stay as first registered. ``config`` and
        ``signature`` are JSON and must never hold secrets (they are readable by everyone
        who can read the registry).
        """
        check_name(name)
        check_tenant(tenant)
        _check_actor(created_by)
        if not isinstance(artifact, bytes | bytearray | memoryview):
            raise DefinitionError(f"an artifact is bytes, not {type(artifact).__name__}")
        if not isinstance(flavor, str) or not _FLAVOR.fullmatch(flavor):
            raise DefinitionError(
                f"flavor {str(flavor)[:60]!r} must match [a-z][a-z0-9_.-]{{0,49}} "
                f"(built in: {', '.join(flavors.flavors())})"
            )
        card = ModelCard() if card is None else card
        _check_card(card)
        config_json = _json(dict(config or {}), f"config of model {name!r}")
        signature_json = None if signature is None else _json(dict(signature), "signature")
        tags_json = _json(_check_tags(tags or {}), "tags")
        card_json = _json(card_to_dict(card), "model card")
        alias_names = [check_alias(a) for a in dict.fromkeys(aliases)]
        data = bytes(artifact)
        digest = hashlib.sha256(data).hexdigest()
        pickled = is_pickle(data)
        given = self._check_parts(name, flavor, data, _blobs(parts))
        now = time.time()
        events: list[AuditEvent] = []
        with self.store.transaction() as uow:
            rows = uow.models
            rows.ensure(tenant, name, card.owner or created_by, now)
            rows.lock(tenant, name)
            for part_digest, blob in given.items():
                rows.store_artifact(part_digest, blob, now)
            rows.store_artifact(digest, data, now)
            existing = rows.same_version(tenant, name, digest, flavor, config_json)
            if existing is not None:
                version = _version(existing)
            else:
                number = rows.next_number(tenant, name)
                row = {"tenant": tenant, "name": name, "version": number, "digest": digest}
                row |= {"flavor": flavor, "config": config_json, "card": card_json}
                row |= {"signature": signature_json, "tags": tags_json}
                row |= {"created_by": created_by, "created_at": now}
                rows.add_version(row)
                rows.touch(tenant, name, now)
                version = _version(row)
                events.append(
                    self._event(
                        "model.registered",
                        created_by,
                        version,
                        digest=digest,
                        size=len(data),
                        flavor=flavor,
                        pickle=pickled,
                        training_run_id=card.training_run_id,
                        **({"parts": sorted(given)} if given else {}),
                    )
                )
            for alias in alias_names:
                event = self._move(uow, version, alias, created_by, "model.alias_moved", now)
                if event is not None:
                    events.append(event)
            self._record(uow, events)
        return version

    # -- resolving ---------------------------------------------------------------------------

    def get(
        self, name: str, ref: int | str = "champion", *, tenant: str = "default"
    ) -> ModelVersion:
        """The version ``ref`` names: a version number, an alias, or ``"latest"``."""
        wanted: int | str
        if isinstance(ref, int) and not isinstance(ref, bool):
            wanted = ref
        elif isinstance(ref, str) and ref.isdigit():
            wanted = int(ref)
        elif isinstance(ref, str):
            wanted = ref  # an alias, or LATEST
        else:
            raise DefinitionError(f"a model ref is a version number or an alias, not {ref!r}")
        with self.store.reading() as uow:
            row = uow.models.version(tenant, name, wanted)
            if row is None:
                raise self._not_found(uow, tenant, name, ref)
        return _version(row)

    def versions(self, name: str, *, tenant: str = "default") -> list[ModelVersion]:
        """Every version of ``name``, oldest first."""
        with self.store.reading() as uow:
            rows = uow.models.versions(tenant, name)
            if not rows:
                raise self._not_found(uow, tenant, name, None)
        return [_version(row) for row in rows]

    def names(self, *, tenant: str = "default") -> list[str]:
        """The names of ``tenant``'s models, sorted."""
        with self.store.reading() as uow:
            return uow.models.names(tenant)

    def aliases(self, name: str, *, tenant: str = "default") -> dict[str, int]:
        """``{alias: version}`` for ``name``."""
        return {a.alias: a.version for a in self.alias_details(name, tenant=tenant)}

    def alias_details(self, name: str, *, tenant: str = "default") -> list[ModelAlias]:
        """Every alias of ``name`` with its previous version and last mover, by alias."""
        with self.store.reading() as uow:
            rows = uow.models.aliases(tenant, name)
            if not rows and not uow.models.names(tenant, name):
                raise self._not_found(uow, tenant, name, None)
        return [_alias(row) for row in rows]

    # -- moving aliases ----------------------------------------------------------------------

    def set_alias(
        self, name: str, alias: str, version: int, *, tenant: str = "default", by: str = "system"
    ) -> ModelVersion:
        """Point ``alias`` at ``version``; where it pointed before becomes its previous
        version. Moving it where it already points changes (and records) nothing."""
        return self._set_alias(name, alias, version, tenant, by, "model.alias_moved")

    def promote(
        self,
        name: str,
        version: int,
        *,
        alias: str = "champion",
        tenant: str = "default",
        by: str = "system",
        also: Callable[[UnitOfWork], object] | None = None,
    ) -> ModelVersion:
        """:meth:`set_alias`, recorded as a promotion (``model.promoted``). ``also`` runs in
        the same unit of work once the model is locked (an approval's conditional update):
        if it raises, nothing moves."""
        return self._set_alias(name, alias, version, tenant, by, "model.promoted", also)

    def _set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        tenant: str,
        by: str,
        action: str,
        also: Callable[[UnitOfWork], object] | None = None,
    ) -> ModelVersion:
        check_alias(alias)
        _check_version(version)
        _check_actor(by)
        with self.store.transaction() as uow:
            self._lock_existing(uow, tenant, name)
            row = uow.models.version(tenant, name, version)
            if row is None:
                raise self._not_found(uow, tenant, name, version)
            target = _version(row)
            if also is not None:
                also(uow)
            event = self._move(uow, target, alias, by, action, time.time())
            self._record(uow, [] if event is None else [event])
        return target

    def rollback(
        self, name: str, alias: str = "champion", *, tenant: str = "default", by: str = "system"
    ) -> ModelVersion:
        """Move ``alias`` back to its previous version: one UPDATE, no artifact touched.

        The alias is then left without a previous version, so rolling back twice is an
        error (:class:`~aevos.errors.NoPreviousVersionError`) rather than a silent return to
        the version that was just rolled back; a retried rollback can never re-deploy it.
        Roll forward with :meth:`set_alias`.
        """
        check_alias(alias)
        _check_actor(by)
        with self.store.transaction() as uow:
            self._lock_existing(uow, tenant, name)
            row = uow.models.alias(tenant, name, alias)
            if row is None:
                raise self._not_found(uow, tenant, name, alias)
            if row["previous_version"] is None:
                raise NoPreviousVersionError(
                    f"alias {alias!r} of model {name!r} points at version {row['version']} and "
                    f"has no previous version to roll back to; move it with set_alias "
                    f"(`aevos models alias {name} {alias} VERSION`)"
                )
            previous = int(row["previous_version"])
            uow.models.roll_back(tenant, name, alias, previous, by=by, now=time.time())
            found = uow.models.version(tenant, name, previous)
            assert found is not None  # versions are never deleted
            target = _version(found)
            event = self._event(
                "model.rolled_back", by, target, alias=alias, from_version=int(row["version"])
            )
            self._record(uow, [event])
        return target

    # -- tags --------------------------------------------------------------------------------

    def set_tags(
        self,
        name: str,
        version: int,
        tags: Mapping[str, str],
        *,
        tenant: str = "default",
        by: str = "system",
    ) -> ModelVersion:
        """Add or overwrite tags of a version (tags are its only mutable metadata)."""
        return self._retag(name, version, _check_tags(tags), (), tenant, by)

    def remove_tags(
        self,
        name: str,
        version: int,
        keys: Iterable[str],
        *,
        tenant: str = "default",
        by: str = "system",
    ) -> ModelVersion:
        """Remove tags of a version by key (absent keys are ignored)."""
        return self._retag(name, version, {}, tuple(keys), tenant, by)

    def _retag(
        self,
        name: str,
        version: int,
        add: dict[str, str],
        remove: Sequence[str],
        tenant: str,
        by: str,
    ) -> ModelVersion:
        _check_version(version)
        _check_actor(by)
        with self.store.transaction() as uow:
            self._lock_existing(uow, tenant, name)
            row = uow.models.version(tenant, name, version)
            if row is None:
                raise self._not_found(uow, tenant, name, version)
            current = _version(row)
            tags = {k: t for k, t in current.tags.items() if k not in remove} | add
            if tags == dict(current.tags):
                return current
            uow.models.set_tags(tenant, name, version, _json(tags, "tags"))
            removed = sorted(k for k in remove if k in current.tags)
            self._record(uow, [self._event("model.tagged", by, current, set=add, removed=removed)])
        return replace(current, tags=tags)

    # -- artifacts ---------------------------------------------------------------------------

    def artifact(self, version: ModelVersion) -> bytes:
        """The artifact bytes of ``version``, checked against its digest.

        Raises :class:`~aevos.errors.ArtifactIntegrityError` when the stored bytes are gone
        or no longer hash to the digest recorded at registration (the blob was altered).
        """
        where = f"the artifact of {version.name}@{version.version} (tenant {version.tenant!r})"
        return self._verified(version.digest, where)

    def verify(self, version: ModelVersion) -> list[str]:
        """Re-hash ``version``'s artifact and, for a composite, every part it names; the
        digests checked, the artifact's first. Raises :class:`~aevos.errors.ArtifactIntegrityError`
        at the first blob missing or altered."""
        data = self.artifact(version)
        whole = flavors.composite(version.flavor)
        named = [] if whole is None else list(whole.parts(data))
        where = f"{version.name}@{version.version} (tenant {version.tenant!r})"
        for digest in named:
            self._verified(digest, f"part sha256 {digest} of {where}")
        return [version.digest, *named]

    def _verified(self, digest: str, what: str) -> bytes:
        with self.store.reading() as uow:
            data = uow.models.artifact(digest)
        if data is None:
            raise ArtifactIntegrityError(f"{what} is missing: no blob sha256 {digest}")
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise ArtifactIntegrityError(
                f"{what} was altered: registered with sha256 "
                f"{digest}, the stored bytes hash to {actual}; refusing to load it"
            )
        return data

    def _check_parts(
        self, name: str, flavor: str, artifact: bytes, given: dict[str, bytes]
    ) -> dict[str, bytes]:
        """The part blobs to store with a version of ``flavor``, checked: a plain flavor
        takes none; a composite's manifest must name exactly the parts given plus ones
        already stored, and its flavor must accept the whole."""
        whole = flavors.composite(flavor)
        if whole is None:
            if given:
                raise DefinitionError(
                    f"flavor {flavor!r} takes no parts; only a composite flavor's manifest "
                    "names parts"
                )
            return {}
        named = list(whole.parts(artifact))
        extra = sorted(set(given) - set(named))
        if extra:
            raise UnknownPartError(
                f"part(s) sha256 {', '.join(extra)} were given but the manifest of {name!r} "
                "does not name them"
            )
        stored: dict[str, bytes] = {}
        with self.store.reading() as uow:
            for digest in named:
                if digest not in given:
                    found = uow.models.artifact(digest)
                    if found is None:
                        raise UnknownPartError(
                            f"the manifest of {name!r} names part sha256 {digest}, which was "
                            "neither given (parts=...) nor is in the blob store"
                        )
                    stored[digest] = found
        for digest, blob in stored.items():
            if hashlib.sha256(blob).hexdigest() != digest:
                raise ArtifactIntegrityError(
                    f"part sha256 {digest} named by the manifest of {name!r} was altered in "
                    "the blob store; refusing to build on it"
                )
        blobs = given | stored
        whole.check(artifact, self._part_loader(lambda digest, _what: blobs[digest]))
        return given

    def _part_loader(self, read: Callable[[str, str], bytes]) -> flavors.PartLoader:
        """Loads a composite's parts through the adapter cache: parts shared by versions
        (one embedding model under an ensemble and a chain) are loaded once, never trusted."""

        def load_part(flavor: str, digest: str, config: Mapping[str, Any]) -> ModelAdapter:
            # Apart from versions' keys: a version's adapter also validates its signature.
            key = (digest, f"{flavor}#part", _json(dict(config), "part config"), False)
            what = f"part sha256 {digest} ({flavor})"
            return self._cached(
                key, lambda: flavors.load_adapter(flavor, read(digest, what), config)
            )

        return load_part

    def load(
        self, version: ModelVersion, *, trusted: bool = False, by: str = "system"
    ) -> ModelAdapter:
        """The adapter for ``version``, built by its flavor from the verified artifact.

        Cached per (digest, flavor, config, trusted): versions sharing an artifact share
        the adapter, and moving an alias back to a version loaded before costs nothing.
        ``trusted=True`` lets the flavor run code from the artifact (unpickle it); each
        such load is audited as ``model.trusted_load`` with ``by`` as its actor.
        """
        key = (version.digest, version.flavor, _json(dict(version.config), "config"), trusted)

        def build() -> ModelAdapter:
            data = self.artifact(version)
            if trusted:
                _check_actor(by)
                event = self._event(
                    "model.trusted_load", by, version, digest=version.digest, pickle=is_pickle(data)
                )
                if self.audit is not None:
                    self.audit.append(event)
            config = dict(version.config)
            if version.signature is not None and "signature" not in config:
                # The version's declared input is what the adapter validates calls against.
                config["signature"] = dict(version.signature)
            where = f"{version.name}@{version.version} (tenant {version.tenant!r})"
            parts = self._part_loader(
                lambda digest, what: self._verified(digest, f"{what} of {where}")
            )
            return flavors.load_adapter(
                version.flavor, data, config, trusted=trusted, load_part=parts
            )

        return self._cached(key, build)

    def _cached(
        self, key: tuple[str, str, str, bool], build: Callable[[], ModelAdapter]
    ) -> ModelAdapter:
        with self._cache_lock:
            adapter = self._cache.get(key)
            if adapter is not None:
                self._cache.move_to_end(key)
                return adapter
            lock = self._loading.setdefault(key, threading.Lock())
        # One loader per key: concurrent first calls wait for it instead of loading again.
        with lock:
            with self._cache_lock:
                adapter = self._cache.get(key)
            if adapter is not None:
                return adapter
            adapter = build()
            with self._cache_lock:
                self._cache[key] = adapter
                self._loading.pop(key, None)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return adapter

    def close(self) -> None:
        """Close the cached adapters that hold resources (an HTTP client's connections) and
        empty the cache; a later :meth:`load` builds them again."""
        with self._cache_lock:
            adapters = list(self._cache.values())
            self._cache.clear()
        for adapter in adapters:
            close = getattr(adapter, "close", None)
            if callable(close):
                close()

    # -- lineage -----------------------------------------------------------------------------

    def lineage(self, name: str, version: int, *, tenant: str = "default") -> dict[str, Any]:
        """Where ``name@version`` came from and what happened to it.

        The version and its card, the training run (its id, and its workflow and status
        when the run is in this store and tenant), the aliases pointing at it now, and, from
        the audit log, its registration and every alias move, promotion or rollback that
        moved an alias to or away from it, oldest first.
        """
        target = self.get(name, _check_version(version), tenant=tenant)
        run_id = target.card.training_run_id
        history: list[dict[str, Any]] = []
        if self.audit is not None:
            for action in _ACTIONS:
                after = 0
                while True:
                    page = self.audit.query(tenant, action=action, after_seq=after, limit=1000)
                    for record in page:
                        if _concerns(record.action, record.subject, record.data, target):
                            history.append(
                                {
                                    "seq": record.seq,
                                    "at": record.at,
                                    "action": record.action,
                                    "actor": record.actor,
                                    "data": dict(record.data),
                                    "hash": record.hash,
                                }
                            )
                    if len(page) < 1000:
                        break
                    after = page[-1].seq
        history.sort(key=lambda item: item["seq"])
        return {
            "tenant": tenant,
            "model": name,
            "version": target.version,
            "ref": target.ref,
            "digest": target.digest,
            "flavor": target.flavor,
            "created_by": target.created_by,
            "created_at": target.created_at,
            "card": card_to_dict(target.card),
            "tags": dict(target.tags),
            "training_run_id": run_id,
            "training_run": self._run_summary(run_id, tenant),
            "aliases": sorted(
                k for k, n in self.aliases(name, tenant=tenant).items() if n == version
            ),
            "registered": next((h for h in history if h["action"] == "model.registered"), None),
            "alias_history": [h for h in history if h["action"] in _ALIAS_ACTIONS],
            "history": history,
        }

    def _run_summary(self, run_id: str | None, tenant: str) -> dict[str, Any] | None:
        if run_id is None:
            return None
        try:
            info = self.store.get_run(run_id)
        except RunNotFoundError:
            return None
        if info.tenant != tenant:
            return None  # another tenant's run: not even its existence is shown
        return {"run_id": run_id, "workflow": info.workflow, "status": info.status.value}

    # -- internals ---------------------------------------------------------------------------

    def _lock_existing(self, uow: UnitOfWork, tenant: str, name: str) -> None:
        # Every write to a model serialises on its row: version numbers cannot collide, and
        # the lock order (model row, then the audit head) is the same everywhere.
        if not uow.models.lock(tenant, name):
            raise self._not_found(uow, tenant, name, None)

    def _move(
        self,
        uow: UnitOfWork,
        version: ModelVersion,
        alias: str,
        by: str,
        action: str,
        now: float,
    ) -> AuditEvent | None:
        tenant, name = version.tenant, version.name
        previous = uow.models.alias_version(tenant, name, alias)
        if previous == version.version:
            return None
        uow.models.point(tenant, name, alias, version.version, previous=previous, by=by, now=now)
        return self._event(action, by, version, alias=alias, previous_version=previous)

    def _event(self, action: str, by: str, version: ModelVersion, **data: Any) -> AuditEvent:
        return AuditEvent(
            action=action,
            actor=by,
            tenant=version.tenant,
            subject=_subject(version.name, version.version),
            data={"model": version.name, "version": version.version, **data},
        )

    def _record(self, uow: UnitOfWork, events: list[AuditEvent]) -> None:
        if events and self.audit is not None:
            self.audit.append_many(events, uow=uow)

    def _not_found(
        self, uow: UnitOfWork, tenant: str, name: str, ref: int | str | None
    ) -> ModelNotFoundError:
        """An error naming what was asked for and what exists instead."""
        names = uow.models.names(tenant)
        if name not in names:
            known = _listing(names) if names else "none"
            return ModelNotFoundError(
                f"no model {name!r} in tenant {tenant!r} (its models: {known})"
            )
        versions = uow.models.numbers(tenant, name)
        span = f"1..{versions[-1]}" if versions == list(range(1, len(versions) + 1)) else versions
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            return ModelNotFoundError(f"model {name!r} has no version {ref} (versions: {span})")
        pairs = [(row["alias"], row["version"]) for row in uow.models.aliases(tenant, name)]
        aliases = _listing([f"{alias} -> {number}" for alias, number in pairs]) or "none"
        return ModelNotFoundError(
            f"model {name!r} has no alias {ref!r} (aliases: {aliases}; versions: {span}; "
            f"'{LATEST}' names the highest)"
        )


def _blobs(parts: Mapping[str, bytes] | Iterable[bytes]) -> dict[str, bytes]:
    """Part blobs by digest; a mapping's keys must be the digests of its values."""
    if isinstance(parts, bytes | bytearray | memoryview):
        raise DefinitionError("parts are a list of blobs (bytes) or a {sha256: bytes} mapping")
    items = list(parts.items()) if isinstance(parts, Mapping) else [(None, b) for b in parts]
    out: dict[str, bytes] = {}
    for claimed, blob in items:
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise DefinitionError(f"a part is bytes, not {type(blob).__name__}")
        data = bytes(blob)
        digest = hashlib.sha256(data).hexdigest()
        if claimed is not None and claimed != digest:
            raise ArtifactIntegrityError(
                f"a part given as sha256 {str(claimed)[:64]} hashes to {digest}"
            )
        out[digest] = data
    return out


def _listing(items: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _concerns(
    action: str, subject: str | None, data: Mapping[str, Any], target: ModelVersion
) -> bool:
    if data.get("model") != target.name:
        return False
    number = target.version
    if subject == _subject(target.name, number):
        return True
    # An alias moved away from this version is part of its history too.
    return action in _ALIAS_ACTIONS and number in (
        data.get("previous_version"),
        data.get("from_version"),
    )


def _version(m: Mapping[str, Any]) -> ModelVersion:
    signature = m["signature"]
    return ModelVersion(
        tenant=str(m["tenant"]),
        name=str(m["name"]),
        version=int(m["version"]),
        digest=str(m["digest"]),
        flavor=str(m["flavor"]),
        config=json.loads(m["config"]),
        card=card_from_dict(json.loads(m["card"]), strict=False),
        signature=None if signature is None else json.loads(signature),
        tags=json.loads(m["tags"]),
        created_by=str(m["created_by"]),
        created_at=float(m["created_at"]),
    )


def _alias(row: Mapping[str, Any]) -> ModelAlias:
    previous = row["previous_version"]
    return ModelAlias(
        name=str(row["name"]),
        alias=str(row["alias"]),
        version=int(row["version"]),
        previous_version=None if previous is None else int(previous),
        updated_by=str(row["updated_by"]),
        updated_at=float(row["updated_at"]),
    )
