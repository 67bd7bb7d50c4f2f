"""KServe V2 gRPC inference messages <-> domain requests/responses (protobuf stops here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

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

# Typed `contents` field for each datatype; FP16 (and BF16) travel only as raw bytes.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_UNSUPPORTED_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def parameters_from_proto(params: Mapping[str, Any]) -> dict[str, ParameterValue]:
    values: dict[str, ParameterValue] = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(param, choice)
    return values


def parameters_to_proto(values: Mapping[str, ParameterValue], target: Any) -> None:
    for key, value in values.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = str(value)


def _from_contents(contents: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray[Any, Any]:
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input '{name}': {datatype} data must be sent in raw_input_contents")
    values = list(getattr(contents, field))
    if len(values) != element_count(shape):
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} holds {element_count(shape)} elements, "
            f"contents.{field} has {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=np.object_)
        array[:] = values
        return array.reshape(shape)
    try:
        return np.asarray(values, dtype=NUMPY_DTYPES[datatype]).reshape(shape)
    except OverflowError as exc:
        raise InvalidInput(f"input '{name}': contents.{field} value out of range for {datatype}") from exc


def request_from_proto(message: pb.ModelInferRequest) -> InferRequest:
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs")
    inputs: list[Tensor] = []
    for index, item in enumerate(message.inputs):
        name = item.name
        if not name:
            raise InvalidInput(f"inputs[{index}].name is empty")
        if item.datatype not in DATATYPES:
            raise InvalidInput(
                f"input '{name}': unknown datatype '{item.datatype}'; one of {sorted(DATATYPES)}"
            )
        shape = tuple(item.shape)
        if any(d < 0 for d in shape):
            raise InvalidInput(f"input '{name}': shape {list(shape)} has a negative dim")
        parameters = parameters_from_proto(item.parameters)
        if any(k in parameters for k in _UNSUPPORTED_PARAMETERS):
            raise InvalidInput(
                f"input '{name}': shared-memory tensors are not supported; send the data inline"
            )
        if raw:
            data = array_from_raw(raw[index], item.datatype, shape, name)
        elif item.HasField("contents"):
            data = _from_contents(item.contents, item.datatype, shape, name)
        else:
            raise InvalidInput(f"input '{name}' carries no data (neither contents nor raw_input_contents)")
        inputs.append(Tensor(name, item.datatype, shape, data, parameters))
    outputs = [RequestedOutput(o.name, parameters_from_proto(o.parameters)) for o in message.outputs]
    for output in outputs:
        if (
            any(k in output.parameters for k in _UNSUPPORTED_PARAMETERS)
            or "classification" in output.parameters
        ):
            raise InvalidInput(
                f"output '{output.name}': shared-memory and classification outputs are not supported"
            )
    return InferRequest(
        model_name=message.model_name,
        model_version=message.model_version,
        inputs=inputs,
        outputs=outputs,
        id=message.id,
        parameters=parameters_from_proto(message.parameters),
    )


def response_to_proto(response: InferResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    for tensor in response.outputs:
        output = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        parameters_to_proto(tensor.parameters, output.parameters)
        message.raw_output_contents.append(array_to_raw(tensor.data, tensor.datatype))
    parameters_to_proto(response.parameters, message.parameters)
    return message


def request_to_proto(request: InferRequest) -> pb.ModelInferRequest:
    """The inverse of request_from_proto, for clients of the router (gateway, workers, tests)."""
    message = pb.ModelInferRequest(
        model_name=request.model_name, model_version=request.model_version, id=request.id
    )
    for tensor in request.inputs:
        item = message.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        parameters_to_proto(tensor.parameters, item.parameters)
        message.raw_input_contents.append(array_to_raw(tensor.data, tensor.datatype))
    for output in request.outputs:
        parameters_to_proto(output.parameters, message.outputs.add(name=output.name).parameters)
    parameters_to_proto(request.parameters, message.parameters)
    return message


def response_from_proto(message: pb.ModelInferResponse) -> InferResponse:
    raw = message.raw_output_contents
    outputs = []
    for index, item in enumerate(message.outputs):
        shape = tuple(item.shape)
        if raw:
            data = array_from_raw(raw[index], item.datatype, shape, item.name)
        else:
            data = _from_contents(item.contents, item.datatype, shape, item.name)
        outputs.append(Tensor(item.name, item.datatype, shape, data, parameters_from_proto(item.parameters)))
    return InferResponse(
        message.model_name,
        message.model_version,
        outputs,
        message.id,
        parameters_from_proto(message.parameters),
    )
