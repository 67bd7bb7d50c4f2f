"""API keys, the authenticator's cache and limits, the permission table and tenancy rules."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisf.services.common import call_context
from aisf.services.common.auth import keys, permissions, tenancy
from aisf.services.common.auth.authenticator import Authenticator
from aisf.services.common.auth.key_store import KeyStore
from aisf.services.common.auth.principal import Principal, decode, service
from aisf.services.common.auth.rate_limits import TierRateLimits
from aisf.services.common.db.engine import Database, open_database
from aisf.services.common.errors import InvalidInput, PermissionDenied, RateLimited, Unauthenticated

TIERS = frozenset({"gold", "standard", "free"})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    opened = open_database(f"sqlite:///{tmp_path / 'keys.db'}", 2)
    yield opened
    opened.close()


@pytest.fixture
def store(database: Database) -> KeyStore:
    made = KeyStore(database, TIERS)
    made.create_tenant("acme", "gold")
    return made


def test_a_new_key_splits_into_its_id_and_a_secret_only_its_digest_matches() -> None:
    made = keys.new_key()
    parts = keys.split(made.token)
    assert parts is not None and parts[0] == made.key_id
    assert keys.matches(made.salt, made.digest, parts[1])
    assert not keys.matches(made.salt, made.digest, parts[1][:-1] + ("A" if parts[1][-1] != "A" else "B"))
    assert made.token not in made.digest and parts[1] not in made.digest


def test_the_same_secret_under_two_salts_has_two_digests() -> None:
    assert keys.digest("00" * 16, "secret-secret-secret") != keys.digest("11" * 16, "secret-secret-secret")


@given(st.text(max_size=80))
def test_split_never_raises_and_refuses_what_is_not_a_key(text: str) -> None:
    parts = keys.split(text)
    if parts is not None:
        assert text.startswith("aisf_") and len(parts[0]) == 12


def test_principals_survive_the_metadata_they_travel_in() -> None:
    who = Principal("acme", "gold", frozenset({"infer"}), frozenset({"a", "b"}), "0123456789ab")
    assert decode(who.encoded) == who
    assert service("").tenant == "default" and service("x").admin


def _authenticator(store: KeyStore, clock: Clock, rates: dict[str, float] | None = None) -> Authenticator:
    return Authenticator(store, 5.0, TierRateLimits(rates or {}, clock), clock)


async def test_a_key_names_its_tenant_tier_roles_and_models(store: KeyStore) -> None:
    _, token = store.create_key("acme", ("infer",), ("tabular-demo",), "ci")
    found = await _authenticator(store, Clock()).principal(f"Bearer {token}")
    assert (found.tenant, found.tier, found.roles, found.models) == (
        "acme",
        "gold",
        frozenset({"infer"}),
        frozenset({"tabular-demo"}),
    )


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "missing API key"),
        ("", "missing API key"),
        ("Basic dXNlcjpwYXNz", "expected 'Bearer <key>'"),
        ("Bearer not-a-key", "unknown or revoked"),
        ("Bearer aisf_0123456789ab_" + "x" * 43, "unknown or revoked"),
    ],
)
async def test_missing_malformed_and_unknown_keys_are_unauthenticated(
    store: KeyStore, authorization: str | None, message: str
) -> None:
    with pytest.raises(Unauthenticated, match=message) as raised:
        await _authenticator(store, Clock()).principal(authorization)
    assert "x" * 43 not in raised.value.message  # a key is a secret: never echoed


async def test_a_wrong_secret_for_a_real_key_id_is_refused(store: KeyStore) -> None:
    key, token = store.create_key("acme", ("infer",))
    forged = f"aisf_{key.key_id}_{'y' * 43}"
    with pytest.raises(Unauthenticated):
        await _authenticator(store, Clock()).principal(f"Bearer {forged}")
    assert (await _authenticator(store, Clock()).principal(f"bearer {token}")).key_id == key.key_id


async def test_revocation_and_tier_changes_take_effect_once_the_cache_expires(store: KeyStore) -> None:
    clock = Clock()
    authenticator = _authenticator(store, clock)
    key, token = store.create_key("acme", ("infer",))
    assert (await authenticator.principal(f"Bearer {token}")).tier == "gold"
    store.set_tier("acme", "free")
    store.revoke(key.key_id)
    assert (await authenticator.principal(f"Bearer {token}")).tier == "gold"  # cached: no DB round trip
    clock.now += 5.1
    with pytest.raises(Unauthenticated, match="revoked"):
        await authenticator.principal(f"Bearer {token}")


async def test_many_requests_with_one_uncached_key_read_the_database_once(store: KeyStore) -> None:
    _, token = store.create_key("acme", ("infer",))
    reads = 0
    lookup = store.lookup

    async def counted(key_id: str) -> object:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        return await lookup(key_id)

    store.lookup = counted  # type: ignore[method-assign,assignment]
    authenticator = _authenticator(store, Clock())
    found = await asyncio.gather(*(authenticator.principal(f"Bearer {token}") for _ in range(20)))
    assert reads == 1 and {p.tenant for p in found} == {"acme"}


async def test_a_tier_over_its_rate_is_told_when_to_retry(store: KeyStore) -> None:
    store.create_tenant("cheap", "free")
    _, token = store.create_key("cheap", ("infer",))
    clock = Clock()
    authenticator = _authenticator(store, clock, {"free": 2.0})
    for _ in range(4):  # a burst of twice the rate
        await authenticator.principal(f"Bearer {token}")
    with pytest.raises(RateLimited) as refused:
        await authenticator.principal(f"Bearer {token}")
    assert refused.value.retry_after == 1 and "free" in refused.value.message
    clock.now += 0.5
    await authenticator.principal(f"Bearer {token}")  # refilled one


def test_key_store_refuses_unknown_tenants_tiers_and_roles(store: KeyStore) -> None:
    with pytest.raises(InvalidInput, match="no tenant 'nobody'"):
        store.create_key("nobody", ("infer",))
    with pytest.raises(InvalidInput, match="tier: 'platinum'"):
        store.create_tenant("other", "platinum")
    with pytest.raises(InvalidInput, match="roles: root"):
        store.create_key("acme", ("root",))
    with pytest.raises(InvalidInput, match="exists already"):
        store.create_tenant("acme", "gold")
    with pytest.raises(InvalidInput, match="tenant: 'a b'"):
        store.create_tenant("a b", "gold")


def test_the_first_admin_key_is_made_once(store: KeyStore) -> None:
    first = store.first_admin_key()
    assert first is not None and keys.split(first) is not None
    assert store.first_admin_key() is None
    (admin,) = [k for k in store.keys("default")]
    assert set(admin.roles) == {"infer", "admin"}


def test_the_internal_secret_is_made_once_and_shared(store: KeyStore, database: Database) -> None:
    assert store.shared_secret("internal-token") == KeyStore(database, TIERS).shared_secret("internal-token")


def _as(who: Principal | None) -> None:
    call_context.principal.set(who)


def test_a_key_acts_for_its_own_tenant_and_only_an_admin_for_another() -> None:
    _as(Principal("acme", "gold", frozenset({"infer"})))
    assert tenancy.tenant_for("") == "acme" and tenancy.tenant_for("acme") == "acme"
    with pytest.raises(PermissionDenied, match="tenant 'acme', not 'globex'"):
        tenancy.tenant_for("globex")
    assert tenancy.tenant_filter("") == "acme"
    assert tenancy.visible("acme") and not tenancy.visible("globex")
    _as(Principal("ops", "gold", frozenset({"admin"})))
    assert tenancy.tenant_for("globex") == "globex" and tenancy.tenant_filter("") == ""
    _as(None)  # auth off: the request names the tenant
    assert tenancy.tenant_for("") == "default" and tenancy.visible("anyone")


def test_rules_need_the_role_and_a_scoped_key_only_reaches_its_models() -> None:
    infer = permissions.rule_for("/inference.GRPCInferenceService/ModelInfer")
    load = permissions.rule_for("/inference.GRPCInferenceService/RepositoryModelLoad")
    scoped = Principal("acme", "gold", frozenset({"infer"}), frozenset({"tabular-demo"}))

    class Request:
        model_name = "vision-demo"

    infer.require(scoped)
    with pytest.raises(PermissionDenied, match="model_name: this key may not use 'vision-demo'"):
        infer.check(scoped, Request())
    with pytest.raises(PermissionDenied, match="lacks the 'admin' role"):
        load.require(scoped)
    with pytest.raises(PermissionDenied, match="scoped to models"):
        permissions.rule_for("/aisf.job.v1.BatchService/CreateBatch").require(scoped)
    assert permissions.rule_for("/unknown.Service/Method").role == "admin"  # fails closed


def _served_methods() -> set[str]:
    from envoy.service.discovery.v3 import ads_pb2
    from tritonclient.grpc import service_pb2

    from aisf.feature.v1 import feature_service_pb2
    from aisf.job.v1 import batch_service_pb2, job_service_pb2
    from aisf.llm.v1 import llm_pb2
    from aisf.mesh.v1 import mesh_service_pb2
    from aisf.pii.v1 import pii_service_pb2
    from aisf.router.v1 import model_control_pb2, model_repository_pb2

    modules = (
        service_pb2,
        feature_service_pb2,
        batch_service_pb2,
        job_service_pb2,
        llm_pb2,
        pii_service_pb2,
        model_control_pb2,
        model_repository_pb2,
        mesh_service_pb2,
        ads_pb2,
    )
    return {
        f"/{service.full_name}/{method.name}"
        for module in modules
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


def test_every_method_of_every_service_has_a_rule_of_its_own() -> None:
    assert _served_methods() == set(permissions.RULES)
