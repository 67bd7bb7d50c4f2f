"""Vision preprocessing as a model (REQ-OPT-01): encoded JPEG/PNG bytes (BYTES [N, 1]) -> decode -> resize ->
normalize -> FP32 [N, 3, height, width]. The decoder is chosen at load and named in the model's config
parameters: DALI on a GPU (nvJPEG), OpenCV on a CPU (faster than DALI's CPU path on small machines), or
whichever `decoder` asks for. A bad image fails only the request it came from, naming its batch index.

Parameters: height, width (224), mean and std (comma-separated, per RGB channel, on 0-255 values),
decoder (auto | opencv | dali), max_pixels (40,000,000: larger images are refused before decoding),
max_image_bytes (20,000,000)."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from aisf.adapters.base import Health, ModelMetadata, ModelSpec, engine_failure
from aisf.adapters.dali_decoder import DaliDecoder, gpu_count
from aisf.adapters.image_headers import BadImage, read_header
from aisf.services.common.errors import ModelLoadFailed, ModelNotReady, RowsRejected
from aisf.services.common.tensors import InferRequest, InferResponse, Tensor, TensorSpec
from aisf.services.common.threads import BlockingPool

INPUT = "IMAGE"
OUTPUT = "PIXELS"
_DECODERS = ("auto", "opencv", "dali")


def _floats(text: str, name: str) -> npt.NDArray[np.float32]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ModelLoadFailed(f"parameters.{name}: three comma-separated numbers, got {text!r}") from None
    if len(values) != 3:
        raise ModelLoadFailed(f"parameters.{name}: three comma-separated numbers, got {text!r}")
    return np.asarray(values, dtype=np.float32).reshape(1, 3, 1, 1)


def opencv_decode(data: bytes, height: int, width: int) -> npt.NDArray[np.uint8] | None:
    """uint8 RGB [height, width, 3] (INTER_AREA, what DALI's antialiased resize approximates); None
    when the bytes do not decode."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    rgb: npt.NDArray[np.uint8] = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB).astype(np.uint8, copy=False)
    return rgb


class ImagePreprocessAdapter:
    def __init__(self) -> None:
        self._name = ""
        self._threads: BlockingPool | None = None
        self._size = (224, 224)
        self._mean = np.zeros((1, 3, 1, 1), np.float32)
        self._scale = np.ones((1, 3, 1, 1), np.float32)
        self._dali: DaliDecoder | None = None
        self._max_pixels = 40_000_000
        self._max_bytes = 20_000_000
        self._loaded = False

    async def load(self, spec: ModelSpec) -> ModelMetadata:
        config, params = spec.config, spec.config.parameters
        if config.max_batch_size < 1:
            raise ModelLoadFailed(f"model '{spec.name}': image_preprocess needs max_batch_size > 0")
        height, width = int(params.get("height", 224)), int(params.get("width", 224))
        if not (1 <= height <= 8192 and 1 <= width <= 8192):
            raise ModelLoadFailed(f"model '{spec.name}': parameters height and width must be 1..8192")
        decoder = str(params.get("decoder", "auto"))
        if decoder not in _DECODERS:
            raise ModelLoadFailed(f"model '{spec.name}': parameters.decoder must be one of {_DECODERS}")
        self._name, self._threads, self._size = spec.name, spec.threads, (height, width)
        self._mean = _floats(str(params.get("mean", "0,0,0")), "mean")
        std = _floats(str(params.get("std", "255,255,255")), "std")
        if np.any(std <= 0):
            raise ModelLoadFailed(f"model '{spec.name}': parameters.std must be positive")
        self._scale = 1.0 / std
        self._max_pixels = int(params.get("max_pixels", 40_000_000))
        self._max_bytes = int(params.get("max_image_bytes", 20_000_000))
        gpus = gpu_count()
        chosen = "dali" if decoder == "dali" or (decoder == "auto" and gpus > 0) else "opencv"
        if chosen == "dali":
            self._dali = await spec.threads.run(
                DaliDecoder, config.max_batch_size, height, width, config.instance_count, gpus > 0
            )
        self._loaded = True
        device = self._dali.device if self._dali is not None else "cpu"
        return ModelMetadata(
            [TensorSpec(INPUT, "BYTES", (-1, 1))],
            [TensorSpec(OUTPUT, "FP32", (-1, 3, height, width))],
            platform="image_preprocess",
            device=device,
            details={"decoder_chosen": f"{chosen} ({device})"},
        )

    async def infer(self, request: InferRequest) -> InferResponse:
        threads = self._threads
        if not self._loaded or threads is None:
            raise ModelNotReady(f"model '{self._name}' is not loaded")
        images: list[bytes] = list(request.inputs[0].data.reshape(-1))
        try:
            pixels = await threads.run(self._preprocess, images)
        except RowsRejected:
            raise
        except Exception as exc:
            raise engine_failure(exc, self._name) from exc
        return InferResponse(
            request.model_name, request.model_version, [Tensor.from_numpy(OUTPUT, pixels)], request.id
        )

    def _preprocess(self, images: list[bytes]) -> npt.NDArray[np.float32]:
        self._check_headers(images)
        height, width = self._size
        if self._dali is not None:
            try:
                decoded = self._dali.decode(images)
            except Exception:
                self._reject_undecodable(images)
                raise  # every image decodes alone: DALI itself failed
        else:
            frames = [opencv_decode(b, height, width) for b in images]
            bad = {i: "the image data is corrupt" for i, f in enumerate(frames) if f is None}
            if bad:
                raise RowsRejected.of(self._where(), bad)
            decoded = np.stack(frames)  # type: ignore[arg-type]
        chw = decoded.transpose(0, 3, 1, 2).astype(np.float32)
        normalized: npt.NDArray[np.float32] = (chw - self._mean) * self._scale
        return normalized

    def _check_headers(self, images: list[bytes]) -> None:
        bad: dict[int, str] = {}
        for index, data in enumerate(images):
            if len(data) > self._max_bytes:
                bad[index] = f"{len(data)} bytes, more than max_image_bytes {self._max_bytes}"
                continue
            try:
                header = read_header(data)
            except BadImage as exc:
                bad[index] = str(exc)
                continue
            if header.width * header.height > self._max_pixels:
                bad[index] = (
                    f"{header.width}x{header.height} {header.format.upper()} exceeds max_pixels "
                    f"{self._max_pixels} (refused before decoding)"
                )
        if bad:
            raise RowsRejected.of(self._where(), bad)

    def _reject_undecodable(self, images: list[bytes]) -> None:
        height, width = self._size
        bad = {
            i: "the image data is corrupt"
            for i, b in enumerate(images)
            if opencv_decode(b, height, width) is None
        }
        if bad:
            raise RowsRejected.of(self._where(), bad)

    def _where(self) -> str:
        return f"model '{self._name}': input '{INPUT}'"

    async def health(self) -> Health:
        return Health(ready=self._loaded)

    async def unload(self) -> None:
        self._loaded = False
        self._dali = None
