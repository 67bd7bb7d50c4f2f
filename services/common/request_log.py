"""The request log (REQ-OPS-02): one structured line per request on every lane, describing the call
(model, version, input shapes and dtypes, parameters, token counts, timings, outcome) and never its
values: tensor contents, prompts, outputs and string parameters stay out, since they may carry PII."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aisf.services.common import call_context
from aisf.services.common.settings import Settings
from aisf.services.common.tensors import ParameterValue

log = logging.getLogger("aisf.requests")

SUCCESS = "success"


class _Described(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def datatype(self) -> str: ...
    @property
    def shape(self) -> Sequence[int]: ...


def describe_tensors(tensors: Sequence[_Described]) -> list[dict[str, Any]]:
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in tensors]


def describe_parameters(parameters: Mapping[str, ParameterValue]) -> dict[str, Any]:
    """Numbers and flags as they are; a string only as its length (it may be a name, an address, a key)."""
    return {
        key: value if not isinstance(value, str) else f"<str {len(value)}>"
        for key, value in parameters.items()
    }


def ms(ns: int) -> float:
    return round(ns / 1e6, 3)


@dataclass(frozen=True, slots=True)
class RequestLog:
    """V2 inferences (the hot path: thousands a second, ~12 µs a line) ask `keeps` first: a line for
    every failure and every slow request, and for a `sample` share of the rest. LLM requests and job
    activities (a line is nothing beside their milliseconds) always write."""

    sample: float = 0.1
    slow_ms: float = 100.0

    def keeps(self, outcome: str, duration_ns: int) -> bool:
        """Whether a hot-path request gets its line: asked before its fields are built."""
        if not log.isEnabledFor(logging.INFO):
            return False
        if outcome != SUCCESS or duration_ns >= self.slow_ms * 1e6 or self.sample >= 1.0:
            return True
        return self.sample > 0 and random.random() < self.sample

    def write(self, message: str, outcome: str, duration_ns: int, fields: dict[str, Any]) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        fields["lane"] = call_context.lane.get() or fields.get("lane") or call_context.REALTIME
        fields["outcome"] = outcome
        fields["duration_ms"] = ms(duration_ns)
        log.info(message, extra=fields)


def request_log_of(settings: Settings) -> RequestLog:
    return RequestLog(settings.request_log_sample, settings.request_log_slow_ms)
