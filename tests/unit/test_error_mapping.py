"""Every typed error maps the same way on both transports, and survives the gRPC hop intact."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from fastapi import FastAPI
from grpc import aio

from aisf.adapters.v2_remote import remote_failure
from aisf.gateway.errors import install_error_handlers
from aisf.services.common.errors import (
    HTTP_STATUS_BY_CODE,
    AisfError,
    Code,
    EngineMisconfigured,
    RequestTooLarge,
    code_for_http_status,
)
from aisf.services.common.grpc_errors import TypedErrors, error_from_rpc, grpc_status

ERRORS = sorted(AisfError._by_reason.values(), key=lambda c: c.reason)


@pytest.fixture(scope="module")
async def raising_channel() -> AsyncIterator[aio.Channel]:
    async def raise_named(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        raise AisfError._by_reason[request.decode()](f"{request.decode()} happened")

    server = aio.server()
    handler = grpc.unary_unary_rpc_method_handler(raise_named)
    service = grpc.method_handlers_generic_handler("test.Raiser", {"Raise": handler})
    server.add_generic_rpc_handlers([TypedErrors(service)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    await channel.close()
    await server.stop(None)


@pytest.fixture(scope="module")
def raising_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{reason}")
    async def raise_named(reason: str) -> None:
        raise AisfError._by_reason[reason](f"{reason} happened")

    return app


def test_every_code_has_an_http_status_and_a_grpc_status() -> None:
    for code in Code:
        assert code in HTTP_STATUS_BY_CODE
        assert grpc_status(code).value[0] == code.value


@pytest.mark.parametrize("error", ERRORS, ids=lambda c: c.reason)
async def test_grpc_answers_the_declared_status_and_client_rebuilds_the_same_type(
    raising_channel: aio.Channel, error: type[AisfError]
) -> None:
    call = raising_channel.unary_unary("/test.Raiser/Raise")
    with pytest.raises(aio.AioRpcError) as raised:
        await call(error.reason.encode(), timeout=5)
    assert raised.value.code() == grpc_status(error.code)
    assert raised.value.details() == f"{error.reason} happened"
    rebuilt = error_from_rpc(raised.value)
    assert type(rebuilt) is error
    assert rebuilt.http_status == error.http_status


@pytest.mark.parametrize("error", ERRORS, ids=lambda c: c.reason)
async def test_http_answers_the_declared_status_with_a_v2_error_body(
    raising_app: FastAPI, error: type[AisfError]
) -> None:
    transport = httpx.ASGITransport(app=raising_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(f"/raise/{error.reason}")
    assert response.status_code == error.http_status
    assert response.json() == {"error": f"{error.reason} happened"}
    if error.retry_after is not None:
        assert response.headers["retry-after"] == str(error.retry_after)


def _rpc_error(code: grpc.StatusCode, details: str) -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details)


def test_a_remote_that_lacks_the_model_is_misconfigured_here_not_an_unknown_model() -> None:
    """The model exists here; a remote without it is our deployment's fault (503), not the caller's 404."""
    error = remote_failure(_rpc_error(grpc.StatusCode.NOT_FOUND, "unknown model 'm'"), "remote 'm'")
    assert isinstance(error, EngineMisconfigured) and error.http_status == 503
    assert "unknown model" in error.message


def test_a_message_over_the_remotes_size_limit_is_413_not_a_retryable_overload() -> None:
    details = "Received message larger than max (8192 vs. 4096)"
    error = remote_failure(_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, details), "remote 'm'")
    assert isinstance(error, RequestTooLarge) and error.http_status == 413


def test_an_upstream_conflict_is_the_callers_request_not_an_internal_error() -> None:
    assert code_for_http_status(409) is Code.INVALID_ARGUMENT


def test_methods_no_service_has_are_not_remembered() -> None:
    """A client naming random methods must not grow the typed-errors wrapper's cache."""
    service = grpc.method_handlers_generic_handler("test.S", {})
    wrapper = TypedErrors(service)

    class Details:
        def __init__(self, method: str) -> None:
            self.method = method
            self.invocation_metadata = ()

    for i in range(100):
        assert wrapper.service(Details(f"/test.S/Nope{i}")) is None  # type: ignore[arg-type]
    assert wrapper._wrapped == {}
