"""DICOM radiographs → 8-bit greyscale PIL images, for generation and for display.

The display pipeline of a radiograph, in DICOM's order: stored values → modality LUT (rescale
slope/intercept or a LUT) → VOI LUT or window centre/width (the image's own default window;
without one, the full range) → MONOCHROME1 inverted so that higher means brighter. pydicom
decodes uncompressed transfer syntaxes itself; compressed ones need extra plugins, so a file
pydicom cannot decode is refused with one line naming it and its transfer syntax.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from steering.errors import RadsteerError

DICOM_MAGIC = b"DICM"


def is_dicom(path: str | Path) -> bool:
    """A DICOM Part-10 file (preamble + 'DICM'), or any file named *.dcm / *.dicom."""
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == DICOM_MAGIC
    except OSError:
        return False


def read_dicom(path: str | Path, *, what: str = "image") -> Image.Image:
    """The radiograph in `path` as an 8-bit 'L' image (modality LUT, VOI window, MONOCHROME1 inverted)."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pragma: no cover - pydicom is a dependency of the maira2/ui extras
        raise RadsteerError(f"{what} image {path} is DICOM: install pydicom (pip install pydicom)") from None
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises InvalidDicomError, OSError, ValueError, …
        raise RadsteerError(f"{what} image {path} is not a readable DICOM file: {exc}") from None
    if "PixelData" not in ds:
        raise RadsteerError(f"{what} image {path}: the DICOM file holds no pixel data")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        arr = ds.pixel_array
    except Exception as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        if syntax is not None and syntax.is_compressed:
            raise RadsteerError(
                f"{what} image {path}: unsupported DICOM transfer syntax {syntax.name} ({syntax}); convert it to "
                f"uncompressed DICOM, PNG or JPEG ({reason})") from None
        raise RadsteerError(f"{what} image {path}: the DICOM pixel data cannot be decoded ({reason})") from None
    if arr.ndim != 2:
        raise RadsteerError(
            f"{what} image {path}: expected one greyscale frame, found pixel data of shape {tuple(arr.shape)} "
            f"({ds.get('PhotometricInterpretation', '?')})")
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    scaled = _voi(values, ds)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        scaled = 1.0 - scaled
    return Image.fromarray(np.round(scaled * 255).astype(np.uint8))


def _first(value: object) -> float:
    """A window value (DICOM allows several; the first is the default)."""
    try:
        return float(value[0])  # type: ignore[index]
    except TypeError:
        return float(value)  # type: ignore[arg-type]


def _voi(values: np.ndarray, ds: object) -> np.ndarray:
    """Modality values → 0..1 through the VOI LUT, else the first window (linear, PS3.3
    C.11.2.1.2), else the image's own range."""
    from pydicom.pixels import apply_voi_lut

    if "VOILUTSequence" in ds:  # type: ignore[operator]
        out = np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float64)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])  # type: ignore[attr-defined]
        return np.clip(out / (2**bits - 1), 0.0, 1.0)
    if "WindowCenter" in ds and "WindowWidth" in ds:  # type: ignore[operator]
        c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)  # type: ignore[attr-defined]
        if w >= 1:
            return np.clip((values - (c - 0.5)) / max(w - 1, 1e-9) + 0.5, 0.0, 1.0)
    lo, hi = float(values.min()), float(values.max())
    return np.zeros_like(values) if hi <= lo else (values - lo) / (hi - lo)
