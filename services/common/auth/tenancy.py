"""Whose resources a call may touch: a key's own tenant's, any tenant's for an admin key or the roles'
own calls; with auth off, the tenant the request names."""

from __future__ import annotations

from aisf.services.common import call_context
from aisf.services.common.errors import PermissionDenied

DEFAULT = "default"


def tenant_for(requested: str) -> str:
    """The tenant a request acts for: the one it names, if its key may act for it."""
    principal = call_context.principal.get()
    if principal is None:
        return requested or DEFAULT
    if not requested or requested == principal.tenant:
        return principal.tenant
    if principal.admin:
        return requested
    raise PermissionDenied(f"tenant: this key belongs to tenant '{principal.tenant}', not '{requested}'")


def tenant_filter(requested: str) -> str:
    """A listing's tenant filter: an admin key may list every tenant's (empty), any other only its own."""
    principal = call_context.principal.get()
    if principal is None or principal.admin:
        return requested
    return tenant_for(requested)


def visible(owner: str) -> bool:
    """Whether the caller may see a resource of tenant `owner` (one it may not is answered not found)."""
    principal = call_context.principal.get()
    return principal is None or principal.admin or principal.tenant == owner


def tier_of(tenant: str) -> str:
    """The tier of `tenant` as the caller's key says (empty: no key says, e.g. with auth off)."""
    principal = call_context.principal.get()
    return principal.tier if principal is not None and principal.tenant == tenant else ""
