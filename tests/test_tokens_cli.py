"""``aevos tokens``: the bootstrap path for credentials."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from aevos import Aevos
from aevos.cli import cli


def test_create_list_revoke(database_url: str) -> None:
    runner = CliRunner()
    base = ["--database-url", database_url, "tokens"]
    created = runner.invoke(
        cli, [*base, "create", "--tenant", "acme", "--role", "admin", "--name", "root"]
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("aevos_")
    app = Aevos(database_url)
    try:
        principal = app.identity.authenticate(token)
        assert (principal.tenant, principal.role.value) == ("acme", "admin")
        listed = runner.invoke(cli, [*base, "list", "--tenant", "acme", "--json"])
        (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert (
            row["name"] == "root" and token.split("_", 2)[2] not in listed.stdout
        )  # the whole secret
        revoked = runner.invoke(cli, [*base, "revoke", principal.token_id, "--tenant", "acme"])
        assert revoked.exit_code == 0, revoked.output
        again = runner.invoke(cli, [*base, "revoke", principal.token_id, "--tenant", "acme"])
        assert again.exit_code == 2 and "token_not_found" in again.stderr
        actions = [r.action for r in app.audit.query("acme")]
        assert actions == ["token.created", "token.revoked"]
    finally:
        app.close()


def test_bad_role_and_tenant_are_clear_errors(database_url: str) -> None:
    runner = CliRunner()
    base = ["--database-url", database_url, "tokens", "create", "--name", "x"]
    bad_role = runner.invoke(cli, [*base, "--tenant", "acme", "--role", "root"])
    assert bad_role.exit_code == 2 and "unknown role 'root'" in bad_role.stderr
    bad_tenant = runner.invoke(cli, [*base, "--tenant", "Acme Corp", "--role", "admin"])
    assert bad_tenant.exit_code == 2 and "tenant" in bad_tenant.stderr
