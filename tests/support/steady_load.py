"""A steady tritonclient load on one V2 endpoint from a few threads, every failure kept; and how many
inferences a server has answered (its own statistics)."""

from __future__ import annotations

import threading

import numpy as np
import tritonclient.grpc as grpcclient

ROW = np.ones((1, 4), dtype=np.float32)


class SteadyLoad:
    """`tabular-demo` inferences to 127.0.0.1:`port`, one after another on each thread, until exit."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.errors: list[str] = []
        self.done = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(port,)) for _ in range(threads)]

    def _run(self, port: int) -> None:
        with grpcclient.InferenceServerClient(f"127.0.0.1:{port}") as client:
            while not self._stop.is_set():
                tensor = grpcclient.InferInput("input__0", [1, 4], "FP32")
                tensor.set_data_from_numpy(ROW)
                try:
                    client.infer("tabular-demo", [tensor], client_timeout=10)
                    self.done += 1
                except Exception as exc:  # every kind of failure counts against what is under test
                    self.errors.append(str(exc)[:300])

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def inferences(grpc_url: str, model: str = "tabular-demo") -> int:
    with grpcclient.InferenceServerClient(grpc_url) as client:
        stats = client.get_inference_statistics(model, as_json=True)
    return sum(int(s.get("inference_count", 0)) for s in stats["model_stats"])
