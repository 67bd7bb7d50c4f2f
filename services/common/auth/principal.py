"""Who a call is made for, as a checked API key says: tenant, tier, roles and model scope."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import orjson

INFER = "infer"
ADMIN = "admin"
ROLES = (INFER, ADMIN)


@dataclass(frozen=True)
class Principal:
    tenant: str
    tier: str
    roles: frozenset[str]
    models: frozenset[str] = field(default_factory=frozenset)
    """Models the key may use; empty: every model."""
    key_id: str = ""
    """The key's id; empty for the roles' own calls (a job worker's, with no caller behind it)."""

    @property
    def admin(self) -> bool:
        return ADMIN in self.roles

    def has(self, role: str) -> bool:
        return role in self.roles or self.admin

    def may_use(self, model: str) -> bool:
        return not self.models or model in self.models

    @cached_property
    def encoded(self) -> str:
        """The form one role hands the next in gRPC metadata (computed once per principal)."""
        return orjson.dumps(
            [self.tenant, self.tier, sorted(self.roles), sorted(self.models), self.key_id]
        ).decode()


def decode(text: str) -> Principal:
    tenant, tier, roles, models, key_id = orjson.loads(text)
    return Principal(tenant, tier, frozenset(roles), frozenset(models), key_id)


def service(tenant: str) -> Principal:
    """The roles calling each other with no caller's key behind the call (job workers, the outbox)."""
    return Principal(tenant or "default", "", frozenset(ROLES))
