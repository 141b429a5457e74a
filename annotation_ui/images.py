"""Case images for the reader: which images a case has, PNGs for the browser, and the
unguessable per-reader links they are served under.

Why links are tokens: an image path (or a case id) in a URL could be guessed or shared; a token
is random, issued to one logged-in reader for one image of an item in their own queue, and the
image route checks both the session and the token's owner before sending a byte.
"""

from __future__ import annotations

import io
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from steering.maira2.dicom import is_dicom
from steering.maira2.images import open_image

VIEWS = (("frontal", "Frontal"), ("lateral", "Lateral"), ("prior_frontal", "Prior frontal"))
"""The image fields of a MAIRA-2 case (`steering.maira2.cases`), in display order."""


@dataclass(frozen=True)
class CaseImage:
    view: str  # "frontal" | "lateral" | "prior_frontal"
    label: str
    path: str


def case_images(inputs: dict | None) -> list[CaseImage]:
    """The images a stored case names (text-only cases: none)."""
    if not isinstance(inputs, dict):
        return []
    return [CaseImage(v, label, str(inputs[v])) for v, label in VIEWS
            if isinstance(inputs.get(v), str) and inputs.get(v)]


class ImageTokens:
    """token → (reader, path), bounded (least recently issued dropped first)."""

    def __init__(self, max_tokens: int = 200_000) -> None:
        self._tokens: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._by_key: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self.max_tokens = max_tokens

    def issue(self, reader: str, path: str) -> str:
        with self._lock:
            token = self._by_key.get((reader, path))
            if token is None:
                token = secrets.token_urlsafe(24)
                self._tokens[token] = (reader, path)
                self._by_key[(reader, path)] = token
                while len(self._tokens) > self.max_tokens:
                    old, key = self._tokens.popitem(last=False)
                    self._by_key.pop(key, None)
            return token

    def lookup(self, token: str, reader: str) -> str | None:
        """The path behind `token` if it was issued to `reader`; None otherwise."""
        with self._lock:
            entry = self._tokens.get(token)
        return entry[1] if entry is not None and entry[0] == reader else None


class PngCache:
    """What the browser is sent for a case image: PNG and JPEG files as they are (browsers show
    them, 16-bit PNGs included), anything else (DICOM, TIFF, …) as an 8-bit greyscale PNG made
    once (DICOM through its VOI window) and cached by path and mtime, bounded in bytes."""

    DIRECT = {"PNG": "image/png", "JPEG": "image/jpeg"}

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._cache: OrderedDict[tuple[str, int, int], tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.max_bytes = max_bytes

    def get(self, path: str) -> tuple[bytes, str]:
        """(bytes, media type); RadsteerError naming the file if it cannot be read."""
        st = Path(path).stat()
        key = (path, st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        value = self._render(path)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = value
                self._bytes += len(value[0])
            while self._bytes > self.max_bytes and len(self._cache) > 1:
                _k, (data, _m) = self._cache.popitem(last=False)
                self._bytes -= len(data)
        return value

    def _render(self, path: str) -> tuple[bytes, str]:
        if not is_dicom(path):
            try:
                with Image.open(path) as im:
                    fmt = im.format
            except (OSError, Image.DecompressionBombError):
                fmt = None
            if fmt in self.DIRECT:
                return Path(path).read_bytes(), self.DIRECT[fmt]
        image = _greyscale8(open_image(path, what="case"))
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=1)
        return buf.getvalue(), "image/png"


def _greyscale8(image: Image.Image) -> Image.Image:
    """8-bit greyscale for display; 16-bit and float images are scaled by their own range (PIL's
    own conversion would clip them)."""
    if image.mode == "L":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255
        return Image.fromarray(np.round(arr).astype(np.uint8))
    return image.convert("L")
