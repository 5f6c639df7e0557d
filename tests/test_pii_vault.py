"""Reversible tokenisation: the vault on SQLite and PostgreSQL, tenant isolation, keys."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from aevos.errors import (
    AevosError,
    PiiAccessDeniedError,
    PiiConfigError,
    PiiTokenNotFoundError,
    VaultKeyError,
)
from aevos.pii import Redactor, Vault
from aevos.storage import Store, open_store
from aevos.storage.schema import pii_vault

KEY = bytes(range(32))
TOKEN = re.compile(r"<([A-Z_]+):(tok_[a-z]+)>")
TEXT = (
    "Customer jane.doe@example.com paid with 4111 1111 1111 1111 from "
    "DE89 3704 0044 0532 0130 00; call +44 20 7946 0958. Again: jane.doe@example.com"
)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = open_store(database_url)
    yield s
    s.close()


@pytest.fixture
def vault(store: Store) -> Vault:
    return Vault(store, KEY)


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


def rows(store: Store) -> list[tuple[str, str, str, bytes]]:
    columns = (pii_vault.c.tenant, pii_vault.c.token, pii_vault.c.kind, pii_vault.c.ciphertext)
    with store.engine.connect() as conn:
        return [(t, k, kind, bytes(c)) for t, k, kind, c in conn.execute(sa.select(*columns))]


def test_tokenize_then_detokenize_round_trip(
    redactor: Redactor, vault: Vault, store: Store
) -> None:
    tokenised = redactor.tokenize(TEXT, tenant="acme", vault=vault)
    assert "jane" not in tokenised.text
    assert "4111" not in tokenised.text
    tokens = TOKEN.findall(tokenised.text)
    assert [kind for kind, _ in tokens] == ["EMAIL", "CREDIT_CARD", "IBAN", "PHONE", "EMAIL"]
    assert tokens[0] == tokens[-1]  # same value, same token: joins still work
    assert len(rows(store)) == 4

    restored = redactor.detokenize(tokenised.text, tenant="acme", vault=vault, allowed=True)
    # Values come back in canonical form: one value, one token, whatever its spelling.
    assert restored == (
        "Customer jane.doe@example.com paid with 4111111111111111 from "
        "DE89370400440532013000; call +442079460958. Again: jane.doe@example.com"
    )


def test_tokens_are_stable_across_spellings_and_calls(redactor: Redactor, vault: Vault) -> None:
    a = redactor.tokenize("card 4111 1111 1111 1111", tenant="acme", vault=vault).text
    b = redactor.tokenize("card 4111-1111-1111-1111", tenant="acme", vault=vault).text
    c = redactor.tokenize("mail JANE(at)EXAMPLE(dot)COM", tenant="acme", vault=vault).text
    d = redactor.tokenize("mail jane@example.com", tenant="acme", vault=vault).text
    assert a == b
    assert c == d
    assert TOKEN.findall(a)[0][1] == vault.token("acme", "CREDIT_CARD", "4111111111111111")


def test_vault_stores_ciphertext_only(redactor: Redactor, vault: Vault, store: Store) -> None:
    redactor.tokenize(TEXT, tenant="acme", vault=vault)
    for _tenant, token, _kind, blob in rows(store):
        data = bytes(blob)
        assert b"jane" not in data
        assert b"4111" not in data
        assert len(token) <= 64


def test_tokenising_tokenised_text_changes_nothing(redactor: Redactor, vault: Vault) -> None:
    once = redactor.tokenize(TEXT, tenant="acme", vault=vault)
    twice = redactor.tokenize(once.text, tenant="acme", vault=vault)
    assert twice.text == once.text
    assert twice.findings == ()
    assert redactor.redact(once.text).text == once.text


def test_tenant_b_cannot_detokenize_tenant_a(
    redactor: Redactor, vault: Vault, store: Store
) -> None:
    text_a = redactor.tokenize(TEXT, tenant="tenant-a", vault=vault).text
    text_b = redactor.tokenize(TEXT, tenant="tenant-b", vault=vault).text
    assert text_a != text_b  # the same value has different tokens per tenant

    assert redactor.detokenize(text_a, tenant="tenant-b", vault=vault, allowed=True) == text_a
    with pytest.raises(PiiTokenNotFoundError) as caught:
        redactor.detokenize(text_a, tenant="tenant-b", vault=vault, allowed=True, strict=True)
    assert caught.value.count == 5
    assert caught.value.code == "pii_token_not_found"

    # Even a row copied into tenant B's key space does not decrypt there: the ciphertext is
    # bound to (tenant, token, kind).
    copied = rows(store)
    with store.engine.begin() as conn:
        for _, token, kind, blob in copied:
            conn.execute(
                store.dialect.insert(pii_vault).on_conflict_do_nothing(),
                {"tenant": "tenant-b", "token": token, "kind": kind, "ciphertext": blob,
                 "created_at": 0.0},
            )  # fmt: skip
    assert redactor.detokenize(text_a, tenant="tenant-b", vault=vault, allowed=True) == text_a
    assert "jane" in redactor.detokenize(text_a, tenant="tenant-a", vault=vault, allowed=True)


@pytest.mark.parametrize("allowed", [False, None, 1, "yes", object()])
def test_detokenize_needs_an_explicit_true(
    redactor: Redactor, vault: Vault, allowed: object
) -> None:
    text = redactor.tokenize(TEXT, tenant="acme", vault=vault).text
    with pytest.raises(PiiAccessDeniedError) as caught:
        redactor.detokenize(text, tenant="acme", vault=vault, allowed=allowed)  # type: ignore[arg-type]
    assert caught.value.code == "pii_access_denied"
    with pytest.raises(PiiAccessDeniedError):
        vault.reveal("acme", [], allowed=allowed)  # type: ignore[arg-type]


def test_another_key_reveals_nothing(redactor: Redactor, vault: Vault, store: Store) -> None:
    text = redactor.tokenize("mail jane@example.com", tenant="acme", vault=vault).text
    other = Vault(store, bytes(32))
    assert redactor.detokenize(text, tenant="acme", vault=other, allowed=True) == text


def test_erase_makes_tokens_irreversible(redactor: Redactor, vault: Vault) -> None:
    text = redactor.tokenize(TEXT, tenant="acme", vault=vault).text
    redactor.tokenize(TEXT, tenant="other", vault=vault)
    email_token = TOKEN.findall(text)[0][1]
    assert vault.erase("acme", [email_token]) == 1
    restored = redactor.detokenize(text, tenant="acme", vault=vault, allowed=True)
    assert email_token in restored and "4111111111111111" in restored
    assert vault.erase("acme") == 3
    assert redactor.detokenize(text, tenant="acme", vault=vault, allowed=True) == text
    assert vault.erase("other") == 4


def test_tenant_names_are_checked(redactor: Redactor, vault: Vault) -> None:
    for tenant in ("", "x" * 65):
        with pytest.raises(PiiConfigError):
            redactor.tokenize(TEXT, tenant=tenant, vault=vault)


# -- keys (no database needed beyond construction) ---------------------------------------


def test_from_env_requires_the_variable(store: Store) -> None:
    with pytest.raises(VaultKeyError, match="AEVOS_VAULT_KEY") as caught:
        Vault.from_env(store, environ={})
    assert isinstance(caught.value, AevosError)
    assert caught.value.code == "vault_key_invalid"


@pytest.mark.parametrize("bad", ["not-a-key-at-all-but-a-secret-value", "c2hvcnQ=", "zz" * 32])
def test_bad_keys_are_rejected_without_echoing_them(store: Store, bad: str) -> None:
    with pytest.raises(VaultKeyError, match="AEVOS_VAULT_KEY") as caught:
        Vault.from_env(store, environ={"AEVOS_VAULT_KEY": bad})
    assert bad not in str(caught.value)


def test_key_formats_and_repr(store: Store) -> None:
    text = Vault.generate_key()
    assert len(Vault.decode_key(text)) == 32
    from_b64 = Vault.from_env(store, environ={"AEVOS_VAULT_KEY": text})
    from_hex = Vault.from_env(
        store, environ={"AEVOS_VAULT_KEY": base64.urlsafe_b64decode(text).hex()}
    )
    assert from_b64.token("t", "EMAIL", "a@b.co") == from_hex.token("t", "EMAIL", "a@b.co")
    assert text not in repr(from_b64)
    with pytest.raises(VaultKeyError, match="32"):
        Vault(store, text.encode())
