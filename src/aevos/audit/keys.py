"""Ed25519 keys for signing audit anchors: generate, encode, load.

Kept apart from :mod:`.anchor` so that only processes that sign or check anchors import
``cryptography`` (about 0.1 s): appending to the log never does.

Keys travel as PKCS#8 / SubjectPublicKeyInfo PEM (what ``openssl genpkey -algorithm
ed25519`` writes) or as the base64 of their 32 raw bytes, the one-line form environment
variables hold. Error messages never include a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import AuditSigningKeyError

__all__ = [
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "generate_signing_key",
    "key_id",
    "load_public_keys",
    "load_signing_key",
    "public_key_pem",
    "public_key_text",
    "signature_valid",
    "signing_key_pem",
    "signing_key_text",
]


def generate_signing_key() -> Ed25519PrivateKey:
    """A new Ed25519 key for signing anchors (``aevos audit keygen`` prints one)."""
    return Ed25519PrivateKey.generate()


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def signing_key_text(key: Ed25519PrivateKey) -> str:
    """The key as ``AEVOS_AUDIT_SIGNING_KEY`` takes it: base64 of its 32 raw bytes."""
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode()


def public_key_text(key: Ed25519PublicKey) -> str:
    """The key as ``AEVOS_AUDIT_PUBLIC_KEY`` takes it: base64 of its 32 raw bytes."""
    return base64.b64encode(_raw_public(key)).decode()


def signing_key_pem(key: Ed25519PrivateKey) -> bytes:
    """The key as PKCS#8 PEM (what ``openssl genpkey -algorithm ed25519`` writes)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _raw_key(text: str, source: str) -> bytes:
    token = text.strip()
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32 or not re.fullmatch(r"[A-Za-z0-9+/_=-]+", token):
        # Never the value: it may be a secret pasted into the wrong variable.
        raise AuditSigningKeyError(
            f"{source} is neither a PEM key nor the base64 of a 32-byte Ed25519 key "
            "(make one with `aevos audit keygen`)"
        )
    return raw


def load_signing_key(text: str, source: str = "the signing key") -> Ed25519PrivateKey:
    """An Ed25519 private key from PKCS#8 PEM or the base64 of its 32 raw bytes."""
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_private_key(text.strip().encode(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise AuditSigningKeyError(
                f"{source} is not a readable unencrypted PEM private key"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditSigningKeyError(
                f"{source} is a {type(key).__name__.lstrip('_')}; anchors are signed with Ed25519"
            )
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw_key(text, source))


_PEM_BLOCK = re.compile(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", re.DOTALL)


def load_public_keys(text: str, source: str = "the public key") -> list[Ed25519PublicKey]:
    """Ed25519 public keys from PEM blocks or base64 of 32 raw bytes, separated by spaces,
    commas or new lines: after a key rotation, list the old key and the new one."""
    keys: list[Ed25519PublicKey] = []
    for block in _PEM_BLOCK.findall(text):
        try:
            key = serialization.load_pem_public_key(block.encode())
        except (ValueError, UnsupportedAlgorithm):
            raise AuditSigningKeyError(f"{source} holds an unreadable PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise AuditSigningKeyError(f"{source} holds a non-Ed25519 public key")
        keys.append(key)
    for token in re.split(r"[\s,]+", _PEM_BLOCK.sub(" ", text)):
        if token:
            keys.append(Ed25519PublicKey.from_public_bytes(_raw_key(token, source)))
    if not keys:
        raise AuditSigningKeyError(f"{source} is empty")
    return keys


def signature_valid(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
