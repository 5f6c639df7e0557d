"""The token vault: encrypted PII values behind deterministic, tenant-scoped tokens.

Two keys are derived (HKDF-SHA256) from one 32-byte master key: an HMAC key that turns
(tenant, kind, value) into a token, and an AES-256-GCM key that encrypts the value. Other
stores of personal data (kept cases, :mod:`aevos.cases`) encrypt with a :class:`Sealer` the
vault derives from the same master key for their own purpose, one key per tenant. The
ciphertext is bound to its row (tenant, token, kind as associated data), so copying a row
to another tenant in the database does not make it decryptable there. Tokens use a
16-letter alphabet without digits or vowels, so a token can never look like a number or
a word that a recogniser would pick up again (tokenising tokenised text is a no-op).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import PiiAccessDeniedError, PiiConfigError, PiiTokenNotFoundError, VaultKeyError
from ..storage.vault import Sealed

if TYPE_CHECKING:
    from ..storage import Store

ENV_VAR = "AEVOS_VAULT_KEY"
_ALPHABET = "bcdfghjklmnpqrst"  # 16 letters: one per nibble
_TOKEN_NIBBLES = 24  # 96 bits: collisions stay negligible for billions of values per tenant
TOKEN = re.compile(rf"<(?P<kind>[A-Z][A-Z0-9_]*):(?P<token>tok_[{_ALPHABET}]{{{_TOKEN_NIBBLES}}})>")
_FORMAT = b"\x01"  # ciphertext layout version: 0x01 | nonce(12) | AES-GCM ciphertext+tag


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)


def _seal(aead: AESGCM, plain: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(12)
    return _FORMAT + nonce + aead.encrypt(nonce, plain, aad)


def _unseal(aead: AESGCM, blob: bytes, aad: bytes) -> bytes | None:
    if blob[:1] != _FORMAT or len(blob) < 13 + 16:
        return None
    try:
        return aead.decrypt(blob[1:13], blob[13:], aad)
    except InvalidTag:
        return None  # another key, or a row moved from elsewhere: not ours to open


class Sealer:
    """AES-256-GCM with one key per tenant, derived (HKDF-SHA256) from the vault's master
    key and a ``purpose``; made by :meth:`Vault.sealer`.

    A tenant's key opens only that tenant's blobs, and ``aad`` (associated data: what the
    blob belongs to, such as its row's key) must be given again to open it, so a blob
    copied to another tenant's row, or another row, does not open. Keys never appear in
    messages or ``repr``.
    """

    _MAX_CACHED = 4096

    def __init__(self, master: bytes, purpose: str) -> None:
        self._master = master
        self.purpose = purpose
        self._keys: dict[str, AESGCM] = {}

    def __repr__(self) -> str:
        return f"Sealer(purpose={self.purpose!r})"

    def _aead(self, tenant: str) -> AESGCM:
        aead = self._keys.get(tenant)
        if aead is None:
            info = "\x00".join(("aevos", self.purpose, _check_tenant(tenant))).encode()
            aead = AESGCM(_derive(self._master, info))
            if len(self._keys) >= self._MAX_CACHED:
                self._keys.clear()
            self._keys[tenant] = aead
        return aead

    def seal(self, tenant: str, plain: bytes, aad: bytes) -> bytes:
        """``plain`` encrypted with ``tenant``'s key, bound to ``aad``."""
        return _seal(self._aead(tenant), plain, aad)

    def open(self, tenant: str, blob: bytes, aad: bytes) -> bytes | None:
        """The plaintext of ``blob``, or None when it was not sealed by this tenant's key
        for ``aad`` (another tenant's, another row's, another master key)."""
        return _unseal(self._aead(tenant), blob, aad)


def _check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not 0 < len(tenant) <= 64 or "\x00" in tenant:
        raise PiiConfigError("tenant must be a non-empty string of at most 64 characters")
    return tenant


class Vault:
    """Stores PII values encrypted in ``aevos_pii_vault``, addressed by tenant and token.

    ``key`` is 32 random bytes. :meth:`from_env` reads it from ``AEVOS_VAULT_KEY``
    (URL-safe base64 or hex, as printed by :meth:`generate_key`). The key never appears in
    messages or ``repr``. Losing the key makes every stored value unrecoverable.
    """

    def __init__(self, store: Store, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != 32:
            size = f"{len(key)} bytes" if isinstance(key, bytes) else type(key).__name__
            raise VaultKeyError(
                f"the vault key must be 32 random bytes, got {size}; decode a text key with "
                f"Vault.decode_key() or load it with Vault.from_env() ({ENV_VAR})"
            )
        self.store = store
        self.__master = key  # only for sealer(): derived keys for other stores
        self._aead = AESGCM(_derive(key, b"aevos/pii-vault/encrypt/v1"))
        self._mac_key = _derive(key, b"aevos/pii-vault/token/v1")

    def __repr__(self) -> str:
        return f"Vault(store={self.store.safe_url!r})"

    @classmethod
    def from_env(cls, store: Store, *, environ: Mapping[str, str] | None = None) -> Vault:
        """A vault keyed by ``AEVOS_VAULT_KEY`` (base64 or hex of 32 bytes)."""
        env = os.environ if environ is None else environ
        text = env.get(ENV_VAR)
        if not text:
            raise VaultKeyError(
                f"{ENV_VAR} is not set; generate a key with "
                "`python -c 'from aevos.pii import Vault; print(Vault.generate_key())'` "
                "and keep it in your secret store"
            )
        return cls(store, cls.decode_key(text, source=ENV_VAR))

    @staticmethod
    def generate_key() -> str:
        """A new random key as URL-safe base64 text, for ``AEVOS_VAULT_KEY``."""
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()

    @staticmethod
    def decode_key(text: str, *, source: str = "the vault key") -> bytes:
        """32 key bytes from base64 (standard or URL-safe) or hex text."""
        text = text.strip()
        key: bytes | None = None
        if len(text) == 64:
            try:
                key = bytes.fromhex(text)
            except ValueError:
                key = None
        if key is None:
            try:
                key = base64.b64decode(text, altchars=b"-_", validate=True)
            except (binascii.Error, ValueError):
                key = None
        if key is None or len(key) != 32:
            # Describe the problem, never the value.
            raise VaultKeyError(
                f"{source} is not a 32-byte key in base64 or hex ({len(text)} characters "
                "given); generate one with Vault.generate_key()"
            )
        return key

    def sealer(self, purpose: str) -> Sealer:
        """Per-tenant AES-256-GCM keys for ``purpose`` (``"cases/v1"``), derived from this
        vault's master key: losing or rotating the vault key loses what they sealed too."""
        if not isinstance(purpose, str) or not purpose or "\x00" in purpose:
            raise PiiConfigError("a sealer's purpose is a non-empty string")
        return Sealer(self.__master, purpose)

    # -- tokens ---------------------------------------------------------------------------

    def token(self, tenant: str, kind: str, value: str) -> str:
        """The token of ``value`` for ``tenant`` (pure: nothing is stored)."""
        message = "\x00".join((_check_tenant(tenant), kind, value)).encode()
        digest = hmac.new(self._mac_key, message, hashlib.sha256).digest()
        nibbles = digest[: _TOKEN_NIBBLES // 2].hex()
        return "tok_" + "".join(_ALPHABET[int(n, 16)] for n in nibbles)

    @staticmethod
    def _aad(tenant: str, token: str, kind: str) -> bytes:
        return "\x00".join(("aevos-pii-vault", tenant, token, kind)).encode()

    def store_values(self, tenant: str, values: Sequence[tuple[str, str]]) -> list[str]:
        """Tokens for ``(kind, value)`` pairs, storing each encrypted value once."""
        _check_tenant(tenant)
        tokens = [self.token(tenant, kind, value) for kind, value in values]
        rows: dict[str, Sealed] = {}
        for (kind, value), token in zip(values, tokens, strict=True):
            if token in rows:
                continue
            sealed = _seal(self._aead, value.encode(), self._aad(tenant, token, kind))
            rows[token] = Sealed(token, kind, sealed)
        if rows:
            with self.store.transaction() as uow:
                uow.vault.add(tenant, list(rows.values()), time.time())
        return tokens

    def reveal(
        self, tenant: str, tokens: Iterable[str], *, allowed: bool
    ) -> dict[str, tuple[str, str]]:
        """``token -> (kind, value)`` for this tenant's tokens among ``tokens``.

        ``allowed`` is the caller's authorisation decision, as for
        :meth:`Redactor.detokenize`. Unknown tokens (another tenant's, or erased) are
        absent from the result.
        """
        _authorised(allowed)
        _check_tenant(tenant)
        with self.store.reading() as uow:
            stored = uow.vault.find(tenant, list(tokens))
        found: dict[str, tuple[str, str]] = {}
        for sealed in stored:
            value = self._open(tenant, sealed.token, sealed.kind, sealed.ciphertext)
            if value is not None:
                found[sealed.token] = (sealed.kind, value)
        return found

    def _open(self, tenant: str, token: str, kind: str, blob: bytes) -> str | None:
        plain = _unseal(self._aead, blob, self._aad(tenant, token, kind))
        return None if plain is None else plain.decode()

    def detokenize(self, text: str, *, tenant: str, allowed: bool, strict: bool = False) -> str:
        """Replace this tenant's tokens in ``text`` by their values (see ``Redactor``)."""
        _authorised(allowed)
        matches = list(TOKEN.finditer(text))
        if not matches:
            return text
        values = self.reveal(tenant, (m.group("token") for m in matches), allowed=allowed)
        pieces: list[str] = []
        pos = 0
        missing = 0
        for m in matches:
            hit = values.get(m.group("token"))
            if hit is None or hit[0] != m.group("kind"):
                missing += 1
                continue
            pieces.append(text[pos : m.start()])
            pieces.append(hit[1])
            pos = m.end()
        if missing and strict:
            raise PiiTokenNotFoundError(
                f"{missing} token(s) in the text are not in tenant {tenant!r}'s vault",
                missing,
            )
        pieces.append(text[pos:])
        return "".join(pieces)

    def erase(self, tenant: str, tokens: Iterable[str] | None = None) -> int:
        """Delete stored values (all of the tenant's, or the given tokens); the count.

        Their tokens can no longer be reversed anywhere they were copied to: this is how
        an erasure request is honoured without rewriting every tokenised record.
        """
        _check_tenant(tenant)
        with self.store.transaction() as uow:
            return uow.vault.erase(tenant, None if tokens is None else list(tokens))


def _authorised(allowed: bool) -> None:
    # `is not True`: a truthy object (a decision record, a non-empty string) is not a yes.
    if allowed is not True:
        raise PiiAccessDeniedError(
            "revealing PII needs an explicit authorisation decision: pass allowed=True only "
            "after checking that the caller's role may see original values"
        )
