"""What an encoded image claims to be, read from its header before anything decodes it: the format (JPEG
or PNG) and the size, so a decompression bomb is refused before it allocates."""

from __future__ import annotations

import struct
from dataclasses import dataclass

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
# Start-of-frame markers carry the size (baseline, progressive, lossless...; not DHT/JPG/DAC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class BadImage(ValueError):
    """Why an image's bytes cannot be taken (the message names no bytes)."""


@dataclass(frozen=True, slots=True)
class ImageHeader:
    format: str
    width: int
    height: int


def read_header(data: bytes) -> ImageHeader:
    if not data:
        raise BadImage("empty image")
    if data.startswith(_PNG):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise BadImage("truncated PNG header")
        width, height = struct.unpack(">II", data[16:24])
        return _sized("png", width, height)
    if data.startswith(_JPEG):
        return _jpeg(data)
    raise BadImage("not a JPEG or PNG image")


def _jpeg(data: bytes) -> ImageHeader:
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            raise BadImage("corrupt JPEG: a segment does not start with a marker")
        marker = data[offset + 1]
        if marker == 0xFF:  # fill bytes before a marker
            offset += 1
            continue
        length = struct.unpack(">H", data[offset + 2 : offset + 4])[0]
        if length < 2:
            raise BadImage("corrupt JPEG: a segment length below 2")
        if marker in _SOF:
            if offset + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return _sized("jpeg", width, height)
        offset += 2 + length
    raise BadImage("truncated JPEG: no frame header")


def _sized(kind: str, width: int, height: int) -> ImageHeader:
    if width == 0 or height == 0:
        raise BadImage(f"zero-size {kind.upper()} image ({width}x{height})")
    return ImageHeader(kind, width, height)
