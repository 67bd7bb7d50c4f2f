"""Image decode and resize with NVIDIA DALI from one pipeline definition: the `mixed` decoder (nvJPEG) on
a GPU, DALI's CPU operators without one. Optional: needs PyPI `nvidia-dali-cuda120` (extra `dali`)."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import numpy.typing as npt

from aisf.services.common.errors import ModelLoadFailed


def _dali() -> Any:
    """DALI's modules, untyped (its stubs do not describe the operators it generates at import)."""
    return importlib.import_module("nvidia.dali")


def gpu_count() -> int:
    """GPUs DALI sees (0 without DALI or without a GPU)."""
    try:
        dali = _dali()
    except ImportError:
        return 0
    return int(dali.backend.GetCUDADeviceCount())


class DaliDecoder:
    """Decodes a batch of encoded images to uint8 RGB [N, height, width, 3]."""

    def __init__(self, max_batch_size: int, height: int, width: int, threads: int, gpu: bool) -> None:
        try:
            dali = _dali()
        except ImportError as exc:
            raise ModelLoadFailed(
                f"decoder dali needs nvidia-dali-cuda120 (pip install 'aisf[dali]'): {exc}"
            ) from exc
        fn, types = dali.fn, dali.types

        @dali.pipeline_def(  # type: ignore[untyped-decorator]
            batch_size=max_batch_size,
            num_threads=threads,
            # A CPU-only pipeline must name no device (DALI 2.4 asserts on CPU_ONLY_DEVICE_ID).
            device_id=0 if gpu else None,
            exec_dynamic=True,
            # One batch fed, one run: a deeper queue would wait for batches no one feeds.
            prefetch_queue_depth=1,
        )
        def decode_and_resize() -> Any:
            encoded = fn.external_source(name="images", dtype=types.UINT8)
            images = fn.decoders.image(encoded, device="mixed" if gpu else "cpu", output_type=types.RGB)
            return fn.resize(images, resize_x=width, resize_y=height)

        self.device = "cuda:0" if gpu else "cpu"
        self._define = decode_and_resize
        self._pipeline = self._build()

    def _build(self) -> Any:
        pipeline = self._define()
        try:
            pipeline.build()
        except Exception as exc:
            raise ModelLoadFailed(f"DALI cannot build its {self.device} pipeline: {exc}") from exc
        return pipeline

    def decode(self, images: list[bytes]) -> npt.NDArray[np.uint8]:
        """Raises DALI's own error when any image fails; the pipeline is then built anew (DALI leaves a
        failed one unusable) and the caller finds which image it was."""
        self._pipeline.feed_input("images", [np.frombuffer(b, dtype=np.uint8) for b in images])
        try:
            (output,) = self._pipeline.run()
        except Exception:
            self._pipeline = self._build()
            raise
        if hasattr(output, "as_cpu"):
            output = output.as_cpu()
        return np.stack([np.asarray(output.at(i)) for i in range(len(images))])
