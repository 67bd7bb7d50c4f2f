"""`aisf tenants ...` and `aisf keys ...`: the metadata database's tenants and API keys, changed directly
(whoever can reach the database is its administrator; no key is needed to make the first one)."""

from __future__ import annotations

import argparse
from pathlib import Path

from aisf.services.common.auth.key_store import ApiKey, KeyStore
from aisf.services.common.auth.principal import INFER, ROLES
from aisf.services.common.db.engine import open_database
from aisf.services.common.settings import Settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tenants = commands.add_parser("tenants", help="tenants and their tiers").add_subparsers(
        dest="action", required=True
    )
    create = tenants.add_parser("create", help="add a tenant")
    create.add_argument("name")
    create.add_argument("--tier", help="its tier (default: AISF_DEFAULT_TIER)")
    tenants.add_parser("list", help="every tenant, its tier and active keys")
    tier = tenants.add_parser("set-tier", help="change a tenant's tier (live within AISF_AUTH_CACHE_S)")
    tier.add_argument("name")
    tier.add_argument("tier")
    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    make = keys.add_parser("create", help="make a key for a tenant (shown once)")
    make.add_argument("--tenant", required=True)
    make.add_argument(
        "--roles", default=INFER, help=f"comma-separated, of {', '.join(ROLES)} (default {INFER})"
    )
    make.add_argument("--models", default="", help="comma-separated models the key may use (default: all)")
    make.add_argument("--name", default="", help="what the key is for")
    listing = keys.add_parser("list", help="keys (ids, never secrets)")
    listing.add_argument("--tenant", default="")
    revoke = keys.add_parser("revoke", help="revoke a key (refused everywhere within AISF_AUTH_CACHE_S)")
    revoke.add_argument("key_id")
    for parser in (*tenants.choices.values(), *keys.choices.values()):
        parser.add_argument("--data-dir", type=Path, help="embedded database folder (AISF_DATA_DIR)")


def _store(args: argparse.Namespace) -> tuple[KeyStore, Settings]:
    settings = Settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    database = open_database(settings.resolved_database_url(), 1)
    return KeyStore(database, frozenset({*settings.tier_priorities, settings.default_tier})), settings


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _row(key: ApiKey) -> str:
    state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
    models = ",".join(key.models) or "*"
    return f"{key.key_id}  {key.tenant:<16} {','.join(key.roles):<12} {models:<24} {state:<24} {key.name}"


def run(args: argparse.Namespace) -> int:
    store, settings = _store(args)
    if args.command == "tenants":
        if args.action == "create":
            made = store.create_tenant(args.name, args.tier or settings.default_tier)
            print(f"tenant {made.name} ({made.tier})")
        elif args.action == "set-tier":
            store.set_tier(args.name, args.tier)
            print(f"tenant {args.name} is now {args.tier}")
        else:
            for tenant in store.tenants():
                print(f"{tenant.name:<24} {tenant.tier:<12} {tenant.active_keys} active keys")
        return 0
    if args.action == "create":
        key, token = store.create_key(args.tenant, _names(args.roles), _names(args.models), args.name)
        print(f"key {key.key_id} for tenant {key.tenant} ({','.join(key.roles)}); shown only now:")
        print(token)
    elif args.action == "revoke":
        if not store.revoke(args.key_id):
            print(f"aisf: no active key {args.key_id}")
            return 1
        print(f"revoked {args.key_id}")
    else:
        for key in store.keys(args.tenant):
            print(_row(key))
    return 0


def first_admin_key(settings: Settings) -> None:
    """The embedded default's first admin key, printed the one time it is made."""
    if settings.auth != "keys":
        return
    database = open_database(settings.resolved_database_url(), 1)
    try:
        store = KeyStore(database, frozenset({*settings.tier_priorities, settings.default_tier}))
        token = store.first_admin_key(tier=settings.default_tier)
    finally:
        database.close()
    if token is not None:
        print("first admin API key (shown only now, keep it; `aisf keys create` makes more):", flush=True)
        print(f"  export AISF_API_KEY={token}", flush=True)
