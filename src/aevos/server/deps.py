"""Request dependencies: the aevos app and the principal behind the bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from ..access import Access
from ..app import Aevos
from ..identity import Principal


def get_app(request: Request) -> Aevos:
    app: Aevos = request.app.state.aevos
    return app


def get_access(app: Annotated[Aevos, Depends(get_app)]) -> Access:
    return app.access


def get_principal(
    access: Annotated[Access, Depends(get_access)],
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    """Authenticate ``Authorization: Bearer <token>``; 401 (audited) otherwise.

    A refusal of a token that names no tenant is audited in the ``default`` tenant's chain:
    taking the tenant from the unauthenticated request would let anyone write into any
    tenant's audit log.
    """
    token = None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else authorization
    return access.authenticate(token, tenant_hint="default")


def get_listed_value_bytes(request: Request) -> int:
    """Listings show a value longer than this as JSON as a summary (see .summaries)."""
    limit: int = request.app.state.listed_value_bytes
    return limit


AppDep = Annotated[Aevos, Depends(get_app)]
AccessDep = Annotated[Access, Depends(get_access)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
ListedDep = Annotated[int, Depends(get_listed_value_bytes)]
