"""The floor: the least a V2 gRPC server can do for one XGBoost model (no validation, metrics, batching).

    python bench/floor_server.py MODEL_JSON [--port 0] [--output output__0]

Implements ModelInfer only: decodes raw_input_contents with numpy, predicts in asyncio.to_thread, answers
raw FP32 [N, 1]. Prints "floor ready: 127.0.0.1:PORT" once serving; stops on SIGTERM/SIGINT. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
import numpy as np
import xgboost
from tritonclient.grpc import service_pb2, service_pb2_grpc


class FloorServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, booster: xgboost.Booster, output_name: str) -> None:
        self._booster = booster
        self._output = output_name

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        tensor = request.inputs[0]
        rows = np.frombuffer(request.raw_input_contents[0], dtype=np.float32).reshape(tuple(tensor.shape))
        scores = await asyncio.to_thread(self._booster.inplace_predict, rows)
        out = np.ascontiguousarray(scores, dtype=np.float32).reshape(len(rows), 1)
        response = service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
        output = response.outputs.add()
        output.name = self._output
        output.datatype = "FP32"
        output.shape.extend(out.shape)
        response.raw_output_contents.append(out.tobytes())
        return response


async def serve(model_json: str, port: int, output_name: str) -> None:
    booster = xgboost.Booster()
    booster.load_model(model_json)
    booster.set_param({"nthread": 1})
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FloorServicer(booster, output_name), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"floor ready: 127.0.0.1:{bound}", flush=True)
    await stop.wait()
    await server.stop(grace=1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_json")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--output", default="output__0")
    args = parser.parse_args()
    asyncio.run(serve(args.model_json, args.port, args.output))


if __name__ == "__main__":
    main()
