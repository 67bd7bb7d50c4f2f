"""The one error hierarchy of aisf; transports map it (grpc_errors, gateway.errors), engines raise it."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import ClassVar


class Code(IntEnum):
    """Status codes, numerically identical to google.rpc.Code (and so to grpc.StatusCode)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# The one code -> HTTP table. A class may only deviate by declaring http_status itself.
HTTP_STATUS_BY_CODE: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


class AisfError(Exception):
    """Base of every error a client may see; `reason` is stable and machine-readable."""

    code: ClassVar[Code] = Code.INTERNAL
    reason: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    # Seconds a client should wait before retrying, sent as Retry-After / retry metadata; an instance
    # may know better (an open circuit knows its cool-down).
    retry_after: int | None = None
    # Whether this failure, raised by an engine call, counts against the engine's circuit breaker:
    # engine faults and timeouts do, the caller's mistakes and our own backpressure do not.
    trips_breaker: ClassVar[bool] = False

    _by_reason: ClassVar[dict[str, type[AisfError]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "http_status" not in cls.__dict__:
            cls.http_status = HTTP_STATUS_BY_CODE[cls.code]
        AisfError._by_reason.setdefault(cls.reason, cls)  # a refinement keeps its parent's reason

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retry_after is not None:
            self.retry_after = retry_after

    def http_headers(self) -> dict[str, str] | None:
        """Headers the HTTP answer carries (both REST error formats send the same ones)."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None

    @staticmethod
    def class_for(reason: str, code: Code) -> type[AisfError]:
        """The class a transport should rebuild from a (reason, code) pair seen on the wire."""
        known = AisfError._by_reason.get(reason)
        if known is not None and known.code == code:
            return known
        return _GENERIC_BY_CODE.get(code, InternalError)


class InternalError(AisfError):
    code = Code.INTERNAL
    reason = "internal"
    trips_breaker = True


class PayloadUnreadable(AisfError):
    """A stored payload sealed under another key (the roles disagree on AISF_PAYLOAD_KEY), or altered."""

    code = Code.INTERNAL
    reason = "payload_unreadable"


class InvalidInput(AisfError):
    code = Code.INVALID_ARGUMENT
    reason = "invalid_input"


class RowsRejected(InvalidInput):
    """Some rows of one engine call are bad (an image that does not decode), the others fine: a batcher
    fails only the requests the bad rows came from and runs the rest again. `rows`: batch index -> why."""

    def __init__(
        self,
        message: str,
        retry_after: int | None = None,
        rows: Mapping[int, str] | None = None,
        where: str = "",
    ) -> None:
        super().__init__(message, retry_after)
        self.rows = dict(rows or {})
        self.where = where

    @classmethod
    def of(cls, where: str, rows: Mapping[int, str]) -> RowsRejected:
        """`where` names the tensor ("model 'm': input 'IMAGE'"); the message names every bad index."""
        shown = sorted(rows.items())[:_ROWS_SHOWN]
        text = "; ".join(f"batch index {index}: {why}" for index, why in shown)
        if len(rows) > _ROWS_SHOWN:
            text += f"; and {len(rows) - _ROWS_SHOWN} more"
        return cls(f"{where}: {text}", rows=rows, where=where)

    def within(self, offset: int, count: int) -> RowsRejected | None:
        """The bad rows among [offset, offset + count), indexed from offset; None when they are all fine."""
        mine = {i - offset: why for i, why in self.rows.items() if offset <= i < offset + count}
        return RowsRejected.of(self.where, mine) if mine else None


_ROWS_SHOWN = 5


class ModelNotFound(AisfError):
    code = Code.NOT_FOUND
    reason = "model_not_found"


class ModelNotReady(AisfError):
    code = Code.UNAVAILABLE
    reason = "model_not_ready"
    retry_after = 1


class ModelLoadFailed(AisfError):
    code = Code.FAILED_PRECONDITION
    reason = "model_load_failed"


class JobNotFound(AisfError):
    code = Code.NOT_FOUND
    reason = "job_not_found"


class FileNotFound(AisfError):
    code = Code.NOT_FOUND
    reason = "file_not_found"


class BatchNotFound(AisfError):
    code = Code.NOT_FOUND
    reason = "batch_not_found"


class JobAlreadyFinished(AisfError):
    code = Code.FAILED_PRECONDITION
    reason = "job_already_finished"
    http_status = 409


class ShadowNotFound(AisfError):
    code = Code.NOT_FOUND
    reason = "shadow_not_found"


class ShadowNotPromotable(AisfError):
    code = Code.FAILED_PRECONDITION
    reason = "shadow_gates_failed"
    http_status = 409


class RequestTooLarge(AisfError):
    code = Code.RESOURCE_EXHAUSTED
    reason = "request_too_large"
    http_status = 413


class EngineOverloaded(AisfError):
    code = Code.RESOURCE_EXHAUSTED
    reason = "engine_overloaded"
    retry_after = 1


class EngineOutOfMemory(AisfError):
    code = Code.RESOURCE_EXHAUSTED
    reason = "engine_out_of_memory"
    http_status = 507
    trips_breaker = True


class EngineUnavailable(AisfError):
    code = Code.UNAVAILABLE
    reason = "engine_unavailable"
    retry_after = 1
    trips_breaker = True


class EngineMisconfigured(AisfError):
    """A remote engine refuses our credentials or lacks the model: our deployment is wrong, not the
    caller's request, and no retry of the same call can succeed (unlike EngineUnavailable)."""

    code = Code.UNAVAILABLE
    reason = "engine_misconfigured"
    trips_breaker = True


# Statuses a remote engine answers that mean its deployment behind us is wrong.
MISCONFIGURED_HTTP_STATUSES = frozenset({401, 403, 404})


class CircuitOpen(AisfError):
    """The model's circuit breaker is open and it has no fallback."""

    code = Code.UNAVAILABLE
    reason = "circuit_open"
    retry_after = 1


class Unsupported(AisfError):
    code = Code.UNIMPLEMENTED
    reason = "unimplemented"


class EntityNotFound(AisfError):
    """A model's feature join found no features for an entity (its policy says not_found)."""

    code = Code.NOT_FOUND
    reason = "entity_not_found"


class FeatureStoreUnavailable(AisfError):
    """The online feature store (Redis, Feast's store) did not answer; retry once it is back."""

    code = Code.UNAVAILABLE
    reason = "feature_store_unavailable"
    retry_after = 1


class ReplicaNotFound(AisfError):
    """A heartbeat or leave for a replica the mesh does not know (never registered, or expired)."""

    code = Code.NOT_FOUND
    reason = "replica_not_found"


class ReplicaIdTaken(AisfError):
    """A replica registering with the id of another live replica (at another address)."""

    code = Code.ALREADY_EXISTS
    reason = "replica_id_taken"


class Unauthenticated(AisfError):
    """No API key, a malformed one, an unknown one or a revoked one."""

    code = Code.UNAUTHENTICATED
    reason = "unauthenticated"

    def http_headers(self) -> dict[str, str] | None:
        return {"WWW-Authenticate": 'Bearer realm="aisf"'}


class PermissionDenied(AisfError):
    """A valid key asking for what it may not: a role it lacks, a model outside its scope, another
    tenant's resources."""

    code = Code.PERMISSION_DENIED
    reason = "permission_denied"


class RateLimited(AisfError):
    """The tenant's tier allows fewer requests a second than it sends."""

    code = Code.RESOURCE_EXHAUSTED
    reason = "rate_limited"
    retry_after = 1


class DeadlineExceeded(AisfError):
    code = Code.DEADLINE_EXCEEDED
    reason = "deadline_exceeded"
    trips_breaker = True


class Cancelled(AisfError):
    code = Code.CANCELLED
    reason = "cancelled"


_GENERIC_BY_CODE: dict[Code, type[AisfError]] = {
    Code.INVALID_ARGUMENT: InvalidInput,
    Code.OUT_OF_RANGE: InvalidInput,
    Code.NOT_FOUND: ModelNotFound,
    Code.UNAVAILABLE: EngineUnavailable,
    Code.RESOURCE_EXHAUSTED: EngineOverloaded,
    Code.FAILED_PRECONDITION: ModelLoadFailed,
    Code.UNIMPLEMENTED: Unsupported,
    Code.DEADLINE_EXCEEDED: DeadlineExceeded,
    Code.CANCELLED: Cancelled,
    Code.UNAUTHENTICATED: Unauthenticated,
    Code.PERMISSION_DENIED: PermissionDenied,
}


# HTTP statuses a remote engine answers that the code table does not produce itself.
_CODE_BY_EXTRA_HTTP_STATUS = {
    408: Code.DEADLINE_EXCEEDED,
    409: Code.INVALID_ARGUMENT,
    413: Code.INVALID_ARGUMENT,
    422: Code.INVALID_ARGUMENT,
    502: Code.UNAVAILABLE,
}


def code_for_http_status(status: int) -> Code:
    """The code of an HTTP status seen from a remote server: the inverse of the one table (its first code
    for a status), plus the statuses servers use that the table does not."""
    if status in _CODE_BY_EXTRA_HTTP_STATUS:
        return _CODE_BY_EXTRA_HTTP_STATUS[status]
    for code, http in HTTP_STATUS_BY_CODE.items():
        if http == status:
            return code
    return Code.UNAVAILABLE if status >= 500 else Code.INVALID_ARGUMENT
