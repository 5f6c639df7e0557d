"""Data policies: what happens to the personal data in a run's input before it is stored.

A run's input is recorded once, when the run starts, and read back by every replay, by the
API, the console and the CLI, and by whoever reads the database. A :class:`DataPolicy`,
declared per workflow (``@app.workflow(data_policy=...)``), per webhook source
(``app.webhook(..., data_policy=...)``) or for the whole app (``Aevos(data_policy=...)``),
says what is done to it first::

    @app.workflow(data_policy=DataPolicy("tokenize", fields=["ticket.text", "customer"]))
    def triage(ctx, ticket: dict, customer: dict) -> str: ...

- ``tokenize``: each finding becomes a vault token (``<EMAIL:tok_...>``); the original is
  encrypted in the tenant's vault (:class:`~aevos.pii.Vault`, ``AEVOS_VAULT_KEY``) and only
  principals with ``pii:reveal`` read it back (audited).
- ``redact``: each finding becomes ``<KIND>``; the original is kept nowhere.
- ``auto`` (the default): ``tokenize`` when the app has a vault key, else ``redact``.
- ``keep``: the input is stored as it was sent (an explicit opt-out, recorded with every
  start).

The stored form is the only form: the workflow itself receives it, on its first execution
and on every replay alike, so replays are deterministic and raw PII reaches the workflow's
code only through :meth:`~aevos.WorkflowContext.reveal`, which the policy must allow
(``reveal=True``). ``fields`` limits the policy to dotted paths that start with a parameter
name (``ticket.text``, ``tickets.*.email``); without it every string is scanned, dict keys
included. ``ignore`` exempts paths (an order number that looks like a phone number).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import PiiConfigError, PiiTokenNotFoundError
from .redactor import _descend, _parse_path
from .vault import TOKEN

if TYPE_CHECKING:
    from .redactor import Redactor
    from .vault import Vault

ACTIONS = ("auto", "tokenize", "redact", "keep")
_Path = tuple[str, ...]
_BIG_INT = 1_000_000  # smaller integers cannot be a card, an account or a phone number
# Short strings found to hold no PII are remembered per redactor: keys and enum-like values
# ("id", "gold", "EUR") repeat in every input, and scanning each costs ~10 us. Only clean
# strings are kept, so the cache never holds personal data.
_CLEAN_MAX_LENGTH = 64
_CLEAN_MAX_ENTRIES = 8192
_clean: weakref.WeakKeyDictionary[Redactor, dict[tuple[Any, str], None]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class DataPolicy:
    """What is done to personal data in a run's input before it is stored (module doc).

    ``action`` is ``auto`` | ``tokenize`` | ``redact`` | ``keep``; ``fields`` the dotted
    paths it applies to (None: every string); ``ignore`` paths it leaves alone; ``kinds``
    the kinds it looks for (None: every kind the app's redactor finds). ``classification``
    is what ``model_call`` policies see as ``data.classification`` for the workflow's model
    calls; ``reveal`` allows the workflow's code to call ``ctx.reveal``; ``trace_payloads``
    lets its steps' outputs and its model calls' inputs and answers into trace spans, always
    redacted first (:mod:`aevos.telemetry.tracing`; off by default).
    """

    action: str = "auto"
    fields: Sequence[str] | None = None
    ignore: Sequence[str] = ()
    kinds: Collection[str] | None = None
    classification: str = "internal"
    reveal: bool = False
    trace_payloads: bool = False
    _include: tuple[_Path, ...] = field(init=False, repr=False, compare=False)
    _ignore: tuple[_Path, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise PiiConfigError(
                f"data policy action {self.action!r} is not one of {', '.join(ACTIONS)}"
            )
        if isinstance(self.fields, str) or isinstance(self.ignore, str):
            raise PiiConfigError("data policy fields and ignore are lists of dotted paths")
        setter = object.__setattr__
        setter(self, "fields", None if self.fields is None else tuple(self.fields))
        setter(self, "ignore", tuple(self.ignore))
        if self.kinds is not None:
            if isinstance(self.kinds, str):
                raise PiiConfigError("data policy kinds is a list of kinds, e.g. ['EMAIL']")
            setter(self, "kinds", tuple(sorted(set(self.kinds))))
        setter(self, "_include", tuple(_parse_path(p) for p in self.fields or ()))
        setter(self, "_ignore", tuple(_parse_path(p) for p in self.ignore))
        if not isinstance(self.classification, str) or not 0 < len(self.classification) <= 100:
            raise PiiConfigError("data policy classification must be 1 to 100 characters")
        if not isinstance(self.reveal, bool):
            raise PiiConfigError("data policy reveal must be True or False")
        if not isinstance(self.trace_payloads, bool):
            raise PiiConfigError("data policy trace_payloads must be True or False")

    @classmethod
    def of(cls, value: DataPolicy | str) -> DataPolicy:
        """``value`` as a policy: a DataPolicy, or an action name (``"keep"``...)."""
        if isinstance(value, DataPolicy):
            return value
        if isinstance(value, str):
            return cls(value)
        raise PiiConfigError(
            f"a data policy is a DataPolicy or one of {', '.join(ACTIONS)}, "
            f"not {type(value).__name__}"
        )

    def to_record(self) -> dict[str, Any]:
        """What an audit record keeps of the policy (names and paths, never data)."""
        record: dict[str, Any] = {"action": self.action}
        if self.fields is not None:
            record["fields"] = list(self.fields)
        if self.ignore:
            record["ignore"] = list(self.ignore)
        if self.kinds is not None:
            record["kinds"] = list(self.kinds)
        if self.trace_payloads:
            record["trace_payloads"] = True
        return record


@dataclass(frozen=True)
class ProtectedInput:
    """A run's arguments as they are stored and as the workflow receives them.

    ``action`` is what was applied (``auto`` when nothing was found, so nothing had to be
    decided), ``found`` how many findings of each kind were replaced.
    """

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    action: str
    found: Mapping[str, int]

    @property
    def changed(self) -> bool:
        return bool(self.found)

    def summary(self) -> dict[str, Any]:
        """For the ``run.started`` audit record: counts by kind, never values."""
        return {"action": self.action, "found": dict(self.found)}


class _Protector:
    """The text transformation of one input: counts findings, batches vault writes."""

    def __init__(
        self,
        policy: DataPolicy,
        redactor: Redactor,
        tenant: str,
        vault: Callable[[], Vault | None],
    ) -> None:
        self.policy = policy
        self.redactor = redactor
        self.tenant = tenant
        self._vault_of = vault
        self.vault: Vault | None = None
        self.mode: str | None = None if policy.action == "auto" else policy.action
        self.pending: list[tuple[str, str]] = []
        self.found: dict[str, int] = {}
        clean = _clean.get(redactor)
        if clean is None:
            clean = _clean.setdefault(redactor, {})
        self.clean = clean
        if self.mode == "tokenize":
            # Declared tokenisation without a key fails every start, with or without PII in
            # it: a misconfiguration shows on the first run, not on the first e-mail.
            self.vault = self._require_vault()

    def _require_vault(self) -> Vault:
        vault = self._vault_of()
        if vault is None:
            from ..errors import VaultKeyError
            from .vault import ENV_VAR

            raise VaultKeyError(
                f"the data policy tokenises inputs but {ENV_VAR} is not set; set a vault key "
                "(Vault.generate_key()) or use action 'redact'"
            )
        return vault

    def __call__(self, text: str) -> str:
        kinds = self.policy.kinds
        short = len(text) <= _CLEAN_MAX_LENGTH
        if short and (kinds, text) in self.clean:
            return text
        if self.mode is None:
            redaction = self.redactor.redact(text, kinds=kinds)
            if not redaction.findings:
                if short:
                    self._remember(kinds, text)
                return text
            # Decided on the first finding, so inputs without PII never touch the vault.
            self.vault = self._vault_of()
            self.mode = "tokenize" if self.vault is not None else "redact"
            if self.mode == "redact":
                self._count(redaction.kinds)
                return redaction.text
        if self.mode == "redact":
            redaction = self.redactor.redact(text, kinds=kinds)
        else:
            assert self.vault is not None
            redaction = self.redactor.tokenize_later(
                text, tenant=self.tenant, vault=self.vault, pending=self.pending, kinds=kinds
            )
        if not redaction.findings and short:
            self._remember(kinds, text)
        self._count(redaction.kinds)
        return redaction.text

    def _remember(self, kinds: Any, text: str) -> None:
        if len(self.clean) >= _CLEAN_MAX_ENTRIES:
            self.clean.clear()  # rarely: the repeated strings come back within a few inputs
        self.clean[(kinds, text)] = None

    def _count(self, kinds: Mapping[str, int]) -> None:
        for kind, n in kinds.items():
            self.found[kind] = self.found.get(kind, 0) + n

    def store(self) -> None:
        if self.pending:
            assert self.vault is not None
            self.vault.store_values(self.tenant, self.pending)


def protect_input(
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    signature: inspect.Signature,
    policy: DataPolicy,
    *,
    redactor: Redactor,
    tenant: str,
    vault: Callable[[], Vault | None],
) -> ProtectedInput:
    """The arguments of a workflow (``signature`` includes its context parameter) with
    ``policy`` applied. ``vault`` returns the app's vault, or None when no key is set.

    Tokenised values are written to the vault here, in one write, before the caller stores
    the run that refers to them; an input without findings writes nothing.
    """
    if policy.action == "keep":
        return ProtectedInput(tuple(args), dict(kwargs), "keep", {})
    protector = _Protector(policy, redactor, tenant, vault)
    include: list[_Path] = [()] if policy.fields is None else list(policy._include)
    ignore = list(policy._ignore)

    def under(prefix: _Path, value: Any) -> Any:
        inc, ign = include, ignore
        for part in prefix:
            inc, ign = _descend(inc, part), _descend(ign, part)
        return _walk(value, inc, ign, protector)

    new_args = tuple(
        under(prefix, value)
        for prefix, value in zip(_positional_paths(signature, len(args)), args, strict=True)
    )
    new_kwargs = {key: under((key,), value) for key, value in kwargs.items()}
    protector.store()
    if not protector.found:
        # Nothing replaced: the caller's own objects, so nothing needs encoding again.
        return ProtectedInput(tuple(args), dict(kwargs), protector.mode or "auto", {})
    return ProtectedInput(new_args, new_kwargs, protector.mode or "auto", protector.found)


def protect_value(
    value: Any,
    policy: DataPolicy,
    *,
    redactor: Redactor,
    tenant: str,
    vault: Callable[[], Vault | None],
) -> tuple[Any, Mapping[str, int]]:
    """One value (a model's input, a task's case) with ``policy``'s action applied to every
    string in it, and the findings by kind; ``value`` itself when nothing was found.

    A policy's ``fields`` and ``ignore`` name a workflow's parameters, which such a value
    has lost: it is scanned whole, so a field the policy did not name fails closed
    (tokenised) rather than open.
    """
    if policy.action == "keep":
        return value, {}
    protector = _Protector(policy, redactor, tenant, vault)
    protected = _walk(value, [()], [], protector)
    protector.store()
    if not protector.found:
        return value, {}
    return protected, dict(protector.found)


def _positional_paths(signature: inspect.Signature, count: int) -> list[_Path]:
    """The path prefix of each positional argument: its parameter's name, or
    ``(<*args name>, <index>)`` for those a ``*args`` parameter takes."""
    names: list[_Path] = []
    star: str | None = None
    for param in list(signature.parameters.values())[1:]:  # the context is not an argument
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            names.append((param.name,))
        elif param.kind is param.VAR_POSITIONAL:
            star = param.name
    extra = count - len(names)
    if extra > 0:
        names += [(star or "args", str(i)) for i in range(extra)]
    return names[:count]


def _walk(value: Any, include: list[_Path], ignore: list[_Path], text: Callable[[str], str]) -> Any:
    if not include or any(not p for p in ignore):
        return value
    everything = any(not p for p in include)
    if isinstance(value, str):
        return text(value) if everything else value
    if isinstance(value, int) and not isinstance(value, bool):
        if everything and abs(value) >= _BIG_INT:
            # A card number sent as a number is still a card number.
            spelled = str(value)
            replaced = text(spelled)
            return value if replaced == spelled else replaced
        return value
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            name = str(key)
            child = _walk(item, _descend(include, name), _descend(ignore, name), text)
            if everything and isinstance(key, str):
                key = text(key)
                if key in out:
                    # Two keys redacted to one placeholder: keep both entries.
                    key = _unique(key, out)
            out[key] = child
        return out
    if isinstance(value, list | tuple):
        items = [
            _walk(item, _descend(include, str(i)), _descend(ignore, str(i)), text)
            for i, item in enumerate(value)
        ]
        return tuple(items) if isinstance(value, tuple) else items
    return value


def _unique(key: str, taken: Mapping[Any, Any]) -> str:
    n = 2
    while f"{key} ({n})" in taken:
        n += 1
    return f"{key} ({n})"


# -- reading originals -----------------------------------------------------------------------


def tokens_in(value: Any) -> set[str]:
    """The vault tokens in a JSON-like value's strings (values and keys)."""
    found: set[str] = set()
    for text in _strings(value):
        if "<" in text:
            found.update(m.group("token") for m in TOKEN.finditer(text))
    return found


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                yield key
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def reveal_value(
    value: Any,
    *,
    tenant: str,
    vault: Callable[[], Vault],
    allowed: bool,
    strict: bool = False,
) -> tuple[Any, int]:
    """``value`` with this tenant's tokens replaced by their originals, and how many
    tokens it held. ``allowed`` is the caller's authorisation decision (as for
    :meth:`Vault.reveal`); the vault is only opened when there are tokens to look up.
    Tokens of another tenant or erased ones stay; ``strict=True`` raises for them.
    """
    from .vault import _authorised

    _authorised(allowed)
    wanted = tokens_in(value)
    if not wanted:
        return value, 0
    known = vault().reveal(tenant, wanted, allowed=allowed)
    missing = 0

    def replace(text: str) -> str:
        nonlocal missing
        if "<" not in text:
            return text
        pieces: list[str] = []
        pos = 0
        for m in TOKEN.finditer(text):
            hit = known.get(m.group("token"))
            if hit is None or hit[0] != m.group("kind"):
                missing += 1
                continue
            pieces += (text[pos : m.start()], hit[1])
            pos = m.end()
        pieces.append(text[pos:])
        return "".join(pieces)

    revealed = _map_strings(value, replace)
    if missing and strict:
        raise PiiTokenNotFoundError(
            f"{missing} token(s) are not in tenant {tenant!r}'s vault (erased, or another "
            "tenant's)",
            missing,
        )
    return revealed, len(wanted)


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, Mapping):
        return {(fn(k) if isinstance(k, str) else k): _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_map_strings(v, fn) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value
