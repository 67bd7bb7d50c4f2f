"""Who a call is for and which lane carries it: bound from the caller's gRPC metadata when a call
arrives, and sent on with every call this process makes for it, so the logs of every hop agree."""

from __future__ import annotations

import contextvars
from collections.abc import Iterable

from aisf.services.common.auth.principal import Principal

REQUEST_ID_KEY = "x-request-id"
TENANT_KEY = "x-aisf-tenant"
LANE_KEY = "x-aisf-lane"
MODEL_KEY = "aisf-model"
"""Names the model a call is for, for a proxy that cannot read it from the body: Envoy routes on it to
the replicas that have the model loaded (the router itself reads the request)."""
PRINCIPAL_KEY = "x-aisf-principal"

REALTIME = "realtime"
JOB = "job"

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="")
lane: contextvars.ContextVar[str] = contextvars.ContextVar("lane", default="")
principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)
"""The checked key's principal (None with auth off)."""

# "Bearer <token>" the roles present to each other, once this process uses keys.
_internal_authorization = ""


def use_internal_token(token: str) -> None:
    """Every call this process makes to another role carries the roles' shared token (and the
    principal it acts for): the next role trusts the caller's key check instead of repeating it."""
    global _internal_authorization
    _internal_authorization = f"Bearer {token}" if token else ""


_KEYS = {REQUEST_ID_KEY: request_id, TENANT_KEY: tenant, LANE_KEY: lane}


def bind(metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
    """Take the call's request id, tenant and lane from its metadata (absent ones are cleared: the
    context of a task serving one call must not leak into the next)."""
    found = dict.fromkeys(_KEYS, "")
    for key, value in metadata or ():
        if key in found:
            found[key] = value.decode() if isinstance(value, bytes) else value
    for key, variable in _KEYS.items():
        variable.set(found[key])
    principal.set(None)


def outgoing(request_id_override: str = "") -> list[tuple[str, str]]:
    """The metadata that carries this call's context to the next service."""
    rid = request_id_override or request_id.get()
    pairs = [(REQUEST_ID_KEY, rid)] if rid else []
    if who := tenant.get():
        pairs.append((TENANT_KEY, who))
    if carrier := lane.get():
        pairs.append((LANE_KEY, carrier))
    if _internal_authorization:
        pairs.append(("authorization", _internal_authorization))
        if (who_called := principal.get()) is not None:
            pairs.append((PRINCIPAL_KEY, who_called.encoded))
    return pairs
