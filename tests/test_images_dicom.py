"""Case images: PNG/JPEG through PIL, DICOM through pydicom (files written by pydicom here),
for MAIRA-2 generation (`open_image` → `preprocess`) and the annotation app's display."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steering.errors import RadsteerError
from steering.maira2.images import ImageSettings, open_image, preprocess
from tests.helpers_dicom import write_dicom

pytest.importorskip("pydicom")

RAMP = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (8, 1))  # 0 … 4080, 12-bit


def test_dicom_full_range_without_window(tmp_path: Path) -> None:
    im = np.asarray(open_image(write_dicom(tmp_path / "a.dcm", RAMP)))
    assert im.dtype == np.uint8 and im.shape == RAMP.shape
    assert im[0, 0] == 0 and im[0, -1] == 255 and np.all(np.diff(im[0].astype(int)) >= 0)


def test_dicom_window_centre_width_and_rescale(tmp_path: Path) -> None:
    im = np.asarray(open_image(write_dicom(tmp_path / "w.dcm", RAMP, window=(2048, 1024))))
    values = RAMP[0].astype(float)
    expected = np.clip((values - 2047.5) / 1023 + 0.5, 0, 1) * 255
    assert np.abs(im[0].astype(float) - expected).max() <= 1.0
    assert im[0, values < 1536].max() == 0 and im[0, values > 2560].min() == 255
    # the window is in modality units: slope 2 doubles the values before windowing
    im2 = np.asarray(open_image(write_dicom(tmp_path / "s.dcm", RAMP, window=(4096, 2048), slope=2.0)))
    assert np.abs(im2[0].astype(float) - expected).max() <= 1.0


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    m2 = np.asarray(open_image(write_dicom(tmp_path / "m2.dcm", RAMP)))
    m1 = np.asarray(open_image(write_dicom(tmp_path / "m1.dcm", RAMP, photometric="MONOCHROME1")))
    assert np.array_equal(m1, 255 - m2)


@pytest.mark.parametrize("kind, match", [
    ("nopixels", "holds no pixel data"),
    ("compressed", r"unsupported DICOM transfer syntax JPEG 2000 .*1\.2\.840\.10008\.1\.2\.4\.90"),
    ("garbage", "not a readable DICOM file|holds no pixel data"),
])
def test_unreadable_dicom_is_one_clear_error_naming_the_file(tmp_path: Path, kind: str, match: str) -> None:
    path = tmp_path / f"{kind}.dcm"
    if kind == "garbage":
        path.write_bytes(b"\0" * 128 + b"DICM" + b"\x01" * 7)
    else:
        write_dicom(path, RAMP, with_pixels=kind != "nopixels", compressed=kind == "compressed")
    with pytest.raises(RadsteerError, match=match) as err:
        open_image(path, what="frontal")
    assert str(path) in str(err.value) and "frontal" in str(err.value) and "\n" not in str(err.value)


def test_dicom_and_png_of_the_same_pixels_give_the_same_model_input(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    img8 = rng.integers(0, 256, size=(64, 80), dtype=np.uint8)
    Image.fromarray(img8).save(tmp_path / "f.png")
    write_dicom(tmp_path / "f.dcm", img8.astype(np.uint16) * 16)  # 12-bit, no window → full range
    settings = ImageSettings(shortest_edge=32, crop_size=(32, 32))
    a = preprocess(open_image(tmp_path / "f.png"), settings)
    b = preprocess(open_image(tmp_path / "f.dcm"), settings)
    assert a.shape == (3, 32, 32) and np.allclose(a, b, atol=0.05)
