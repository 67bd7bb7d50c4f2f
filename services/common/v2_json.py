"""KServe V2 REST bodies (JSON tensors and the binary tensor extension) <-> domain requests."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aisf.services.common.errors import InvalidInput
from aisf.services.common.tensors import (
    DATATYPES,
    NUMPY_DTYPES,
    InferRequest,
    InferResponse,
    ParameterValue,
    RequestedOutput,
    Tensor,
    array_from_raw,
    array_to_raw,
    element_count,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT = "application/json"
BINARY_CONTENT = "application/octet-stream"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputBody(_Body):
    name: Annotated[str, Field(min_length=1)]
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: str
    parameters: dict[str, ParameterValue] = {}
    data: Any = None


class OutputBody(_Body):
    name: Annotated[str, Field(min_length=1)]
    parameters: dict[str, ParameterValue] = {}


class InferRequestBody(_Body):
    id: str = ""
    parameters: dict[str, ParameterValue] = {}
    inputs: Annotated[list[InputBody], Field(min_length=1)]
    outputs: list[OutputBody] = []


class IndexBody(_Body):
    ready: bool = False


def parse_index_body(body: bytes) -> IndexBody:
    """POST /v2/repository/index takes an optional {"ready": bool}."""
    if not body.strip():
        return IndexBody()
    try:
        return IndexBody.model_validate(orjson.loads(body))
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise InvalidInput(f"invalid repository index request: {_validation_message(exc)}") from None


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """Separate the JSON header from the binary tensor section (if the extension is used)."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidInput(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 <= length <= len(body):
        raise InvalidInput(f"{HEADER_LENGTH} {length} is outside the body of {len(body)} bytes")
    return body[:length], body[length:]


def parse_request(
    model: str, version: str, body: bytes, header_length: str | None
) -> tuple[InferRequest, dict[str, bool]]:
    """The domain request, and which outputs the client wants back as binary."""
    header, binary = split_body(body, header_length)
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    return request_from_document(model, version, document, binary)


def request_from_document(
    model: str, version: str, document: object, binary: bytes = b""
) -> tuple[InferRequest, dict[str, bool]]:
    """A parsed V2 JSON request (and its binary section, if any) as a domain request."""
    try:
        parsed = InferRequestBody.model_validate(document)
    except ValidationError as exc:
        raise InvalidInput(f"invalid inference request: {_validation_message(exc)}") from None
    offset = 0
    inputs: list[Tensor] = []
    for item in parsed.inputs:
        if item.datatype not in DATATYPES:
            raise InvalidInput(
                f"input '{item.name}': unknown datatype '{item.datatype}'; one of {sorted(DATATYPES)}"
            )
        shape = tuple(item.shape)
        size = item.parameters.get("binary_data_size")
        params = {k: v for k, v in item.parameters.items() if k != "binary_data_size"}
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise InvalidInput(
                    f"input '{item.name}': binary_data_size {size!r} overruns the binary section"
                )
            data = array_from_raw(binary[offset : offset + size], item.datatype, shape, item.name)
            offset += size
        else:
            data = _from_json(item, shape)
        inputs.append(Tensor(item.name, item.datatype, shape, data, params))
    if offset != len(binary):
        raise InvalidInput(f"binary section has {len(binary) - offset} bytes no input claims")
    return InferRequest(
        model_name=model,
        model_version=version,
        inputs=inputs,
        outputs=[
            RequestedOutput(o.name, {k: v for k, v in o.parameters.items() if k != "binary_data"})
            for o in parsed.outputs
        ],
        id=parsed.id,
        parameters={k: v for k, v in parsed.parameters.items() if k != "binary_data_output"},
    ), _binary_wishes(parsed)


def _from_json(item: InputBody, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    if item.data is None:
        raise InvalidInput(f"input '{item.name}' has neither data nor parameters.binary_data_size")
    count = element_count(shape)
    try:
        if item.datatype == "BYTES":
            flat = np.asarray(item.data, dtype=np.object_).reshape(-1)
            values = [v.encode("utf-8") if isinstance(v, str) else v for v in flat]
            if not all(isinstance(v, bytes) for v in values):
                raise ValueError("BYTES elements must be strings")
            array = np.empty(len(values), dtype=np.object_)
            array[:] = values
        else:
            array = np.asarray(item.data, dtype=NUMPY_DTYPES[item.datatype]).reshape(-1)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(
            f"input '{item.name}': data does not fit datatype {item.datatype}: {exc}"
        ) from None
    if array.size != count:
        raise InvalidInput(
            f"input '{item.name}': shape {list(shape)} holds {count} elements, data has {array.size}"
        )
    return array.reshape(shape)


def _binary_wishes(parsed: InferRequestBody) -> dict[str, bool]:
    """Which outputs the client wants in the binary section (per output, else the request default)."""
    default = bool(parsed.parameters.get("binary_data_output", False))
    wishes = {o.name: bool(o.parameters.get("binary_data", default)) for o in parsed.outputs}
    wishes[""] = default
    return wishes


def encode_response(response: InferResponse, binary: dict[str, bool]) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when a binary section follows."""
    document, chunks = response_document(response, binary)
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def response_document(
    response: InferResponse, binary: dict[str, bool], json_only: bool = False
) -> tuple[dict[str, Any], list[bytes]]:
    """The V2 JSON document of a response (numpy arrays inside), and the binary chunks it refers to.

    JSON has no NaN or infinity: such an output goes to the binary section, which every V2 client
    reads whatever it asked for; with `json_only` (no binary section to carry it) they become null."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        parameters: dict[str, Any] = dict(tensor.parameters)
        wants_binary = binary.get(tensor.name, binary.get("", False))
        if wants_binary or (not json_only and not _json_safe(tensor)):
            raw = array_to_raw(tensor.data, tensor.datatype)
            parameters["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            entry["data"] = _to_json(tensor)
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = dict(response.parameters)
    document["outputs"] = outputs
    return document, chunks


def _json_safe(tensor: Tensor) -> bool:
    return tensor.data.dtype.kind != "f" or bool(np.isfinite(tensor.data).all())


def _to_json(tensor: Tensor) -> Any:
    flat = np.ascontiguousarray(tensor.data).reshape(-1)
    if tensor.datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    if tensor.datatype == "FP16":
        return flat.astype(np.float32)
    return flat
