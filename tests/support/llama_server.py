"""Runs llama.cpp's OpenAI-compatible server (`python -m llama_cpp.server`) over a GGUF on a free port."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.processes import free_port, stop_process


@dataclass
class LlamaServer:
    process: subprocess.Popen[str]
    port: int
    model: str  # the name it serves the model under
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> int:
        """Stop it early (e.g. to test a server going away); stopping again is a no-op."""
        return stop_process(self.process)


def _ready(url: str, api_key: str) -> bool:
    try:
        return httpx.get(
            f"{url}/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=1
        ).is_success
    except httpx.TransportError:
        return False


@contextmanager
def running_llama_server(
    gguf: Path, model: str, api_key: str, n_ctx: int = 512, timeout_s: float = 60
) -> Iterator[LlamaServer]:
    """The server with embeddings on and an API key; yields once it answers /v1/models."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="aisf-llama-server-") as workdir:
        log = Path(workdir) / "server.log"
        with log.open("w", encoding="utf-8") as sink:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llama_cpp.server",
                    *("--model", str(gguf), "--model_alias", model, "--api_key", api_key),
                    *("--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)),
                    *("--n_threads", "1", "--embedding", "true", "--verbose", "false"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        server = LlamaServer(process, port, model, log)
        try:
            deadline = time.monotonic() + timeout_s
            while not _ready(server.base_url, api_key):
                exited = process.poll()
                if exited is not None or time.monotonic() > deadline:
                    why = "timed out" if exited is None else f"exited with status {exited}"
                    raise RuntimeError(f"llama_cpp.server did not start ({why}):\n{log.read_text()}")
                time.sleep(0.05)
            yield server
        finally:
            stop_process(process)
