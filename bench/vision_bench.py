"""Vision pipeline: images/s and p99 of decode + resize + normalize at batch 1/8/32 with (a) Pillow per image
in Python, (b) DALI's CPU path, (c) OpenCV, side by side; the share of decode in the whole pipeline; and
the DAG executor's cost per step against calling the same models back to back through the dataplane.

    .venv/bin/python -m bench.vision_bench [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from aisf.adapters.dali_decoder import DaliDecoder
from aisf.adapters.image_preprocess import opencv_decode
from aisf.services.common.tensors import InferRequest, Tensor
from aisf.services.samples import build_vision_demo, build_vision_pipeline
from tests.support.dataplanes import routing

SIZE = 64  # the sample CNN's input


def _images(count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    frames = [
        cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (0, 0), 2) for _ in range(count)
    ]
    return [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]


def _pillow(images: list[bytes]) -> np.ndarray:
    return np.stack(
        [
            np.asarray(Image.open(io.BytesIO(b)).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
            for b in images
        ]
    )


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1e3, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3


def _measure(run: Callable[[list[bytes]], object], images: list[bytes], batch: int, seconds: float) -> str:
    samples: list[float] = []
    done = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        chunk = images[(done % len(images)) :][:batch] or images[:batch]
        started = time.perf_counter()
        run(chunk)
        samples.append(time.perf_counter() - started)
        done += len(chunk)
    p50, p99 = _percentiles(samples)
    return f"{done / sum(samples):8.0f} img/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"


async def _dag_overhead(seconds: float) -> list[str]:
    """The pipeline vs the same three steps called back to back through the same dataplane."""
    root = Path(tempfile.mkdtemp()) / "models"
    build_vision_demo(root)
    build_vision_pipeline(root)
    jpeg = _images(1)
    data = np.array([[jpeg[0]]], dtype=np.object_)
    lines = []
    async with routing(root) as router:
        plane = router.dataplane
        adapter = router.repository.get("vision-pipeline").adapter
        top_k = adapter._functions["top-k"]  # type: ignore[attr-defined]

        async def pipeline() -> None:
            await plane.infer(InferRequest("vision-pipeline", "", [Tensor("IMAGE", "BYTES", (1, 1), data)]))

        async def by_hand() -> None:
            pixels = await plane.infer(
                InferRequest("vision-preprocess", "", [Tensor("IMAGE", "BYTES", (1, 1), data)])
            )
            tensor = pixels.outputs[0]
            scores = await plane.infer(
                InferRequest("vision-demo", "", [Tensor("input", "FP32", tensor.shape, tensor.data)])
            )
            top_k({"probabilities": scores.outputs[0].data}, {"k": 3})

        results: dict[str, tuple[float, float]] = {}
        # Each twice, alternating: the second round of each is reported (the first warms caches and pools).
        for name, call in [("back to back", by_hand), ("pipeline", pipeline)] * 2:
            samples = []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                started = time.perf_counter()
                await call()
                samples.append(time.perf_counter() - started)
            results[name] = _percentiles(samples)
        for name, (p50, p99) in results.items():
            lines.append(f"  {name:<13} batch 1: p50 {p50:6.3f} ms  p99 {p99:6.3f} ms")
        per_step = (results["pipeline"][0] - results["back to back"][0]) / 3
        lines.append(f"  DAG executor: {per_step * 1e3:+.0f} us per step at p50 (3 steps)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    images = _images(64)
    dali = DaliDecoder(32, SIZE, SIZE, 2, gpu=False)
    paths: dict[str, Callable[[list[bytes]], object]] = {
        "(a) Pillow, per image": _pillow,
        "(b) DALI CPU, batched": dali.decode,
        "(c) OpenCV": lambda chunk: [opencv_decode(b, SIZE, SIZE) for b in chunk],
    }
    print(f"decode + resize, 640x480 JPEG -> {SIZE}x{SIZE}, {args.seconds:.0f} s each")
    for batch in (1, 8, 32):
        for name, run in paths.items():
            print(f"  batch {batch:>2}  {name:<22} {_measure(run, images, batch, args.seconds)}")
    print("vision-pipeline vs its steps called by hand (in process, through the dataplane):")
    for line in asyncio.run(_dag_overhead(args.seconds)):
        print(line)


if __name__ == "__main__":
    main()
