"""MAIRA-2 image preprocessing with PIL and numpy only (no torchvision).

Two steps, as in the official pipeline:
1. the MAIRA-2 processor's own normalisation: greyscale, then min–max rescale to 0–255 (uint8);
2. the snapshot's image processor (`preprocessor_config.json`, a BitImageProcessor for RAD-DINO):
   convert to RGB, resize (shortest edge, PIL resample), centre crop, rescale (×1/255),
   normalise with mean/std, channels first.
Step 2 follows transformers' numpy implementation operation for operation (same rounding, same
crop offsets, same float precisions), so the pixels equal what the official processor produced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from steering.errors import RadsteerError
from steering.maira2.dicom import is_dicom, read_dicom

PREPROCESSOR_FILE = "preprocessor_config.json"


@dataclass(frozen=True)
class ImageSettings:
    """The fields of `preprocessor_config.json` that decide the pixels."""

    do_resize: bool = True
    shortest_edge: int | None = 518
    resize_to: tuple[int, int] | None = None  # (height, width) when `size` gives both
    resample: int = 3  # PIL.Image.BICUBIC
    do_center_crop: bool = True
    crop_size: tuple[int, int] = (518, 518)
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = (0.5307, 0.5307, 0.5307)
    image_std: tuple[float, ...] = (0.2583, 0.2583, 0.2583)
    do_convert_rgb: bool = True

    @classmethod
    def from_dict(cls, raw: dict[str, Any], file: Path | str = PREPROCESSOR_FILE) -> ImageSettings:
        def pair(value: Any, field: str) -> tuple[int, int]:
            if isinstance(value, dict) and "height" in value and "width" in value:
                return int(value["height"]), int(value["width"])
            if isinstance(value, int):
                return value, value
            raise RadsteerError(f"{file}: field {field!r} must be {{'height': H, 'width': W}}, not {value!r}")

        size = raw.get("size", {"shortest_edge": 518})
        shortest, resize_to = None, None
        if isinstance(size, dict) and "shortest_edge" in size:
            shortest = int(size["shortest_edge"])
        else:
            resize_to = pair(size, "size")

        def triple(field: str, default: tuple[float, ...]) -> tuple[float, ...]:
            value = raw.get(field, default)
            values = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value] * 3))
            if len(values) not in (1, 3):
                raise RadsteerError(f"{file}: field {field!r} needs 1 or 3 values, not {value!r}")
            return values * 3 if len(values) == 1 else values

        do_center_crop = bool(raw.get("do_center_crop", True))
        if do_center_crop and "crop_size" not in raw:
            raise RadsteerError(f"{file}: field 'crop_size' is missing (needed because do_center_crop is true)")
        return cls(
            do_resize=bool(raw.get("do_resize", True)),
            shortest_edge=shortest,
            resize_to=resize_to,
            resample=int(raw.get("resample", 3)),
            do_center_crop=do_center_crop,
            crop_size=pair(raw["crop_size"], "crop_size") if do_center_crop else (0, 0),
            do_rescale=bool(raw.get("do_rescale", True)),
            rescale_factor=float(raw.get("rescale_factor", 1 / 255)),
            do_normalize=bool(raw.get("do_normalize", True)),
            image_mean=triple("image_mean", cls.image_mean),
            image_std=triple("image_std", cls.image_std),
            do_convert_rgb=bool(raw.get("do_convert_rgb", True)),
        )

    @classmethod
    def from_snapshot(cls, snapshot: str | Path) -> ImageSettings:
        file = Path(snapshot) / PREPROCESSOR_FILE
        if not file.is_file():
            raise RadsteerError(
                f"{file} not found: the MAIRA-2 snapshot must include its image preprocessor config "
                "(download the whole microsoft/maira-2 repository)"
            )
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RadsteerError(f"{file} is not valid JSON: {exc}") from None
        return cls.from_dict(raw, file)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the pixels for an input of this size."""
        if self.do_resize:
            height, width = self._resized(height, width)
        if self.do_center_crop:
            return self.crop_size
        return height, width

    def _resized(self, height: int, width: int) -> tuple[int, int]:
        if self.resize_to is not None:
            return self.resize_to
        assert self.shortest_edge is not None
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)


def open_image(path: str | Path, *, what: str = "image") -> Image.Image:
    """Open a PNG, JPEG (anything PIL reads) or DICOM file, with an error naming the field and
    path when it cannot be read. DICOM goes through `steering.maira2.dicom` (modality LUT, VOI
    window, MONOCHROME1 inversion) and comes back as 8-bit greyscale."""
    path = Path(path)
    if not path.is_file():
        raise RadsteerError(f"{what} image not found: {path}")
    if is_dicom(path):
        return read_dicom(path, what=what)
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, Image.DecompressionBombError) as exc:
        raise RadsteerError(f"{what} image {path} cannot be read: {exc}") from None


def normalise_greyscale(image: Image.Image, *, what: str = "image") -> Image.Image:
    """Greyscale, min–max rescaled to 0–255 (the MAIRA-2 processor's own first step)."""
    arr = np.array(image.convert("L")).astype(float)
    arr -= arr.min()
    top = arr.max()
    if top == 0:
        raise RadsteerError(f"{what} image is blank (one grey level everywhere); it cannot be min–max normalised")
    arr /= top
    arr *= 255
    return Image.fromarray(arr.astype(np.uint8)).convert("L")


def _center_crop(arr: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """transformers' `center_crop` on an HWC array (zero-pads when the image is smaller)."""
    h, w = arr.shape[:2]
    ch, cw = crop
    top, left = (h - ch) // 2, (w - cw) // 2
    if top >= 0 and left >= 0 and top + ch <= h and left + cw <= w:
        return arr[top : top + ch, left : left + cw]
    nh, nw = max(ch, h), max(cw, w)
    padded = np.zeros((nh, nw) + arr.shape[2:], dtype=arr.dtype)
    tp, lp = -(-(nh - h) // 2), -(-(nw - w) // 2)
    padded[tp : tp + h, lp : lp + w] = arr
    top, left = top + tp, left + lp
    top, left = max(top, 0), max(left, 0)
    return padded[top : top + ch, left : left + cw]


def preprocess(image: Image.Image, settings: ImageSettings, *, what: str = "image") -> np.ndarray:
    """One image → float32 [3, H, W] pixels (greyscale normalisation included)."""
    grey = normalise_greyscale(image, what=what)
    img = grey.convert("RGB") if settings.do_convert_rgb else grey
    if settings.do_resize:
        h, w = settings._resized(img.height, img.width)
        img = img.resize((w, h), resample=settings.resample)
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if settings.do_center_crop:
        arr = _center_crop(arr, settings.crop_size)
    if settings.do_rescale:
        arr = (arr.astype(np.float64) * settings.rescale_factor).astype(np.float32)
    else:
        arr = arr.astype(np.float32)
    if settings.do_normalize:
        channels = arr.shape[-1]
        mean = np.array(settings.image_mean[:channels], dtype=arr.dtype)
        std = np.array(settings.image_std[:channels], dtype=arr.dtype)
        arr = (arr - mean) / std
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)


def pixel_values(images: Sequence[Image.Image], settings: ImageSettings, names: Sequence[str] | None = None):
    """A study's images (frontal, lateral, prior order) → torch float32 [n, 3, H, W]."""
    import torch

    names = names or [f"image {i}" for i in range(len(images))]
    arrays = [preprocess(im, settings, what=name) for im, name in zip(images, names, strict=True)]
    return torch.from_numpy(np.stack(arrays))
