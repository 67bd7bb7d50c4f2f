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


# Parameters whose values say how a request was served, never who sent it: Triton's and aisf's own.
_SERVING_PARAMETERS = frozenset(
    ("timeout", "priority", "sequence_start", "sequence_end", "binary_data_output", "max_batch_size")
)


def describe_parameters(parameters: Mapping[str, ParameterValue]) -> dict[str, Any]:
    """Every parameter's name; the value only of serving parameters and flags. Any other value shows as
    its type (a string with its length): a client's own parameter may be a customer id or a key."""
    described: dict[str, Any] = {}
    for key, value in parameters.items():
        if isinstance(value, bool) or (key in _SERVING_PARAMETERS and not isinstance(value, str)):
            described[key] = value
        elif isinstance(value, str):
            described[key] = f"<str {len(value)}>"
        else:
            described[key] = f"<{type(value).__name__}>"
    return described


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
        fields["lane"] = call_context.lane.get() or call_context.REALTIME
        fields["outcome"] = outcome
        fields["duration_ms"] = ms(duration_ns)
        log.info(message, extra=fields)


def request_log_of(settings: Settings) -> RequestLog:
    return RequestLog(settings.request_log_sample, settings.request_log_slow_ms)
