"""Tenants and API keys in the metadata database: what `aisf tenants|keys` change and what the
authenticator reads (one indexed row by key id)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aisf.services.common.auth import keys
from aisf.services.common.auth.principal import ROLES, Principal
from aisf.services.common.db.engine import Database, aware
from aisf.services.common.db.shared_secrets import shared_secret
from aisf.services.common.db.tables import ApiKeyRow, TenantRow
from aisf.services.common.errors import InvalidInput

_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
INTERNAL_TOKEN = "internal-token"


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    tier: str
    created_at: datetime
    active_keys: int


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    tenant: str
    tier: str
    name: str
    roles: tuple[str, ...]
    models: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None
    salt: str
    digest: str

    def principal(self) -> Principal:
        return Principal(self.tenant, self.tier, frozenset(self.roles), frozenset(self.models), self.key_id)


def _names(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def check_tenant_name(name: str) -> str:
    if not _TENANT.fullmatch(name):
        raise InvalidInput(f"tenant: '{name}' must be 1-64 letters, digits, '.', '_' or '-'")
    return name


class KeyStore:
    def __init__(self, database: Database, tiers: frozenset[str]) -> None:
        self._database = database
        self._engine = database.engine
        self._tiers = tiers

    def _tier(self, tier: str) -> str:
        if tier not in self._tiers:
            raise InvalidInput(f"tier: '{tier}' is not one of {', '.join(sorted(self._tiers))}")
        return tier

    def create_tenant(self, name: str, tier: str) -> Tenant:
        now = datetime.now(UTC)
        try:
            with Session(self._engine) as session, session.begin():
                session.add(TenantRow(name=check_tenant_name(name), tier=self._tier(tier), created_at=now))
        except IntegrityError:
            raise InvalidInput(f"tenant: '{name}' exists already") from None
        return Tenant(name, tier, now, 0)

    def set_tier(self, name: str, tier: str) -> None:
        with Session(self._engine) as session, session.begin():
            changed = session.execute(
                update(TenantRow).where(TenantRow.name == name).values(tier=self._tier(tier))
            )
            if not changed.rowcount:  # type: ignore[attr-defined]
                raise InvalidInput(f"tenant: no tenant '{name}'")

    def tenants(self) -> list[Tenant]:
        active = (
            select(ApiKeyRow.tenant, func.count().label("n"))
            .where(ApiKeyRow.revoked_at.is_(None))
            .group_by(ApiKeyRow.tenant)
            .subquery()
        )
        query = (
            select(TenantRow, func.coalesce(active.c.n, 0))
            .outerjoin(active, active.c.tenant == TenantRow.name)
            .order_by(TenantRow.name)
        )
        with Session(self._engine) as session:
            return [Tenant(t.name, t.tier, aware(t.created_at), n) for t, n in session.execute(query)]

    def create_key(
        self, tenant: str, roles: tuple[str, ...], models: tuple[str, ...] = (), name: str = ""
    ) -> tuple[ApiKey, str]:
        """The new key's record and the key itself: the only time it exists outside the caller."""
        unknown = [r for r in roles if r not in ROLES]
        if unknown or not roles:
            raise InvalidInput(f"roles: {', '.join(unknown) or 'none given'}; roles are {', '.join(ROLES)}")
        made = keys.new_key()
        now = datetime.now(UTC)
        with Session(self._engine) as session, session.begin():
            owner = session.get(TenantRow, tenant)
            if owner is None:
                raise InvalidInput(f"tenant: no tenant '{tenant}' (aisf tenants create {tenant})")
            session.add(
                ApiKeyRow(
                    key_id=made.key_id,
                    tenant=tenant,
                    name=name,
                    salt=made.salt,
                    digest=made.digest,
                    roles=",".join(roles),
                    models=",".join(models),
                    created_at=now,
                    revoked_at=None,
                )
            )
            tier = owner.tier
        key = ApiKey(made.key_id, tenant, tier, name, roles, models, now, None, made.salt, made.digest)
        return key, made.token

    def keys(self, tenant: str = "") -> list[ApiKey]:
        query = select(ApiKeyRow, TenantRow.tier).join(TenantRow, TenantRow.name == ApiKeyRow.tenant)
        if tenant:
            query = query.where(ApiKeyRow.tenant == tenant)
        with Session(self._engine) as session:
            rows = session.execute(query.order_by(ApiKeyRow.created_at)).all()
            return [_key(row, tier) for row, tier in rows]

    def revoke(self, key_id: str) -> bool:
        with Session(self._engine) as session, session.begin():
            changed = session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.key_id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            return bool(changed.rowcount)  # type: ignore[attr-defined]

    def has_keys(self) -> bool:
        with Session(self._engine) as session:
            return (
                session.scalar(select(ApiKeyRow.key_id).where(ApiKeyRow.revoked_at.is_(None)).limit(1))
                is not None
            )

    def first_admin_key(self, tenant: str = "default", tier: str = "standard") -> str | None:
        """The embedded default's first key: an admin key of `tenant`, made only while no key exists."""
        if self.has_keys():
            return None
        with Session(self._engine) as session, session.begin():
            if session.get(TenantRow, tenant) is None:
                session.add(TenantRow(name=tenant, tier=self._tier(tier), created_at=datetime.now(UTC)))
        return self.create_key(tenant, tuple(ROLES), name="first admin key")[1]

    def _lookup(self, key_id: str) -> ApiKey | None:
        query = (
            select(ApiKeyRow, TenantRow.tier)
            .join(TenantRow, TenantRow.name == ApiKeyRow.tenant)
            .where(ApiKeyRow.key_id == key_id)
        )
        with Session(self._engine) as session:
            found = session.execute(query).first()
            return _key(*found) if found is not None else None

    async def lookup(self, key_id: str) -> ApiKey | None:
        return await self._database.run(self._lookup, key_id)

    async def tier(self, tenant: str) -> str | None:
        """The tenant's tier, None for no such tenant."""
        return await self._database.run(self._tier_of, tenant)

    def _tier_of(self, tenant: str) -> str | None:
        with Session(self._engine) as session:
            row = session.get(TenantRow, tenant)
            return row.tier if row is not None else None

    def shared_secret(self, name: str) -> str:
        return shared_secret(self._engine, name)


def _key(row: ApiKeyRow, tier: str) -> ApiKey:
    return ApiKey(
        row.key_id,
        row.tenant,
        tier,
        row.name,
        _names(row.roles),
        _names(row.models),
        aware(row.created_at),
        aware(row.revoked_at),
        row.salt,
        row.digest,
    )
