"""The REST side of the key check: one dependency of every route, answering 401 before a body is read.
The principal it binds travels on with every gRPC call made for the request, where each method's rule
(roles, model scope) is applied: one table for both transports (services/common/auth/permissions)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Request

from aisf.services.common import call_context
from aisf.services.common.auth.authenticator import Authenticator

TenantHeader = Annotated[
    str,
    Header(
        alias="X-Aisf-Tenant",
        description="Tenant to act for: with keys, only an admin key may name one other than its own "
        "(empty: the key's tenant); with auth off, the tenant itself",
    ),
]

# Health is public, as on gRPC (load balancers and probes carry no keys); /metrics is its own port.
PUBLIC_ROUTES = frozenset(
    {
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{model}/ready",
        "/v2/models/{model}/versions/{version}/ready",
    }
)


async def authenticate(request: Request) -> None:
    authenticator: Authenticator | None = request.app.state.authenticator
    if authenticator is None:
        return
    if getattr(request.scope.get("route"), "path", "") in PUBLIC_ROUTES:
        return
    principal = await authenticator.principal(request.headers.get("authorization"))
    call_context.principal.set(principal)
    call_context.tenant.set(principal.tenant)  # never the client's own X-Aisf-Tenant
