import contextvars

from aisf.services.common import call_context


def _in_fresh_context(metadata: list[tuple[str, str | bytes]] | None) -> list[tuple[str, str]]:
    def bound() -> list[tuple[str, str]]:
        call_context.bind(metadata)
        return call_context.outgoing()

    return contextvars.copy_context().run(bound)


def test_a_calls_request_id_tenant_and_lane_come_from_its_metadata_and_travel_on() -> None:
    sent = _in_fresh_context(
        [("x-request-id", "r-1"), ("x-aisf-tenant", b"bytes-co"), ("x-aisf-lane", "job"), ("other", "x")]
    )
    assert sent == [("x-request-id", "r-1"), ("x-aisf-tenant", "bytes-co"), ("x-aisf-lane", "job")]


def test_binding_a_call_without_context_clears_what_an_earlier_call_left() -> None:
    def two_calls() -> list[tuple[str, str]]:
        call_context.bind([("x-request-id", "first"), ("x-aisf-tenant", "acme")])
        call_context.bind(None)
        return call_context.outgoing()

    assert contextvars.copy_context().run(two_calls) == []


def test_an_explicit_request_id_wins_over_the_bound_one() -> None:
    def call() -> list[tuple[str, str]]:
        call_context.bind([("x-request-id", "bound")])
        return call_context.outgoing("explicit")

    assert contextvars.copy_context().run(call) == [("x-request-id", "explicit")]
