"""The gRPC side of the key check, run by the one registration wrapper (grpc_errors.TypedErrors) before a
handler: a caller's key, or the roles' shared token with the principal the calling role forwards."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from aisf.services.common import call_context
from aisf.services.common.auth import principal as principals
from aisf.services.common.auth.authenticator import Authenticator
from aisf.services.common.auth.permissions import Rule

Metadata = Iterable[tuple[str, str | bytes]]
_DECODED = 4096


class GrpcGuard:
    def __init__(self, authenticator: Authenticator, internal_token: str) -> None:
        self._authenticator = authenticator
        self._internal = f"Bearer {internal_token}".encode()
        self._decoded: dict[str, principals.Principal] = {}

    async def admit(self, metadata: Metadata | None, rule: Rule) -> None:
        """Bind the call's principal (and its tenant) or raise Unauthenticated / PermissionDenied."""
        authorization, forwarded = None, None
        for key, value in metadata or ():
            if key == "authorization":
                authorization = value if isinstance(value, str) else value.decode(errors="replace")
            elif key == call_context.PRINCIPAL_KEY:
                forwarded = value if isinstance(value, str) else value.decode(errors="replace")
        if authorization is not None and hmac.compare_digest(authorization.encode(), self._internal):
            # Another role: it checked its caller's key and says who that was (the tenant came with it).
            found = self._forwarded(forwarded) if forwarded else principals.service(call_context.tenant.get())
        elif rule.public:
            return
        else:
            found = await self._authenticator.principal(authorization)
            call_context.tenant.set(found.tenant)  # never the client's own x-aisf-tenant
        call_context.principal.set(found)
        rule.require(found)

    def _forwarded(self, text: str) -> principals.Principal:
        found = self._decoded.get(text)
        if found is None:
            if len(self._decoded) >= _DECODED:
                self._decoded.clear()
            found = self._decoded[text] = principals.decode(text)
        return found
