"""Real MAIRA-2 weights on a GPU (skipped unless a snapshot path and CUDA are available).

    RADSTEER_MAIRA2_PATH=/data/maira-2 \\
    RADSTEER_MAIRA2_CASE=/data/studies.jsonl \\
    pytest tests/test_maira2_gpu.py -s

RADSTEER_MAIRA2_PATH: a local `huggingface-cli download microsoft/maira-2 --local-dir DIR`.
RADSTEER_MAIRA2_CASE (optional): a MAIRA-2 cases JSONL; its first study is reported. Without
it a synthetic frontal radiograph-like image is used (the text then only shows the wiring works).
The findings are printed and written to RADSTEER_MAIRA2_OUT (default: the test's tmp dir).

It generates twice, with each source of image features (`image_features`: the backbone's
layer-normed `feature_maps`, radsteer's default, and its raw `hidden_states`, what the later
official code feeds the projector), and prints the two reports side by side: whichever reads as
a radiologist's report of the image is the one the released weights were trained with.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

SNAPSHOT = os.environ.get("RADSTEER_MAIRA2_PATH")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.maira2_weights,
    pytest.mark.skipif(not SNAPSHOT, reason="set RADSTEER_MAIRA2_PATH to a local microsoft/maira-2 snapshot"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (MAIRA-2 is a 7B model)"),
]


def _synthetic_frontal(path: Path) -> Path:
    yy, xx = np.mgrid[0:600, 0:512].astype(float)
    lungs = np.exp(-(((xx - 160) / 90) ** 2 + ((yy - 300) / 180) ** 2)) + np.exp(
        -(((xx - 352) / 90) ** 2 + ((yy - 300) / 180) ** 2))
    img = 200 - 150 * lungs + 10 * np.sin(yy / 7)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(path)
    return path


def _side_by_side(left: str, right: str, titles: tuple[str, str], width: int = 60) -> str:
    import textwrap

    a, b = textwrap.wrap(left, width) or [""], textwrap.wrap(right, width) or [""]
    rows = [f"{titles[0]:<{width}} | {titles[1]}", f"{'-' * width}-+-{'-' * width}"]
    rows += [f"{x:<{width}} | {y}" for x, y in zip(a + [""] * (len(b) - len(a)), b + [""] * (len(a) - len(b)),
                                                   strict=True)]
    return "\n".join(rows)


def test_real_maira2_writes_a_findings_section(tmp_path) -> None:
    from protocols.cases import read_cases_jsonl
    from steering.maira2.adapter import Maira2Adapter
    from steering.maira2.cases import parse_case

    adapter = Maira2Adapter.from_pretrained(SNAPSHOT, dtype="bfloat16", device="cuda")
    assert adapter.num_layers == 32 and adapter.hidden_size == 4096 and adapter.default_layer == 15
    assert adapter.tokens_per_image == 1369 and adapter.image_token_id == 32204
    assert adapter.load_facts["tensors"] == 522

    case_file = os.environ.get("RADSTEER_MAIRA2_CASE")
    if case_file:
        base = Path(case_file).parent
        case = read_cases_jsonl(case_file, lambda row, where: parse_case(row, base_dir=base, where=where))[0]
    else:
        case = {"case_id": "synthetic", "frontal": str(_synthetic_frontal(tmp_path / "frontal.png")),
                "indication": "Dyspnoea.", "technique": "PA view."}
    ids = adapter.prompt_ids(case)
    n_images = sum(case.get(k) is not None for k in ("frontal", "lateral", "prior_frontal"))
    assert ids.count(32204) == 1369 * n_images

    out_dir = Path(os.environ.get("RADSTEER_MAIRA2_OUT", tmp_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    findings = {}
    for source in ("feature_maps", "hidden_states"):  # same weights: only the projector's input changes
        adapter.model.model.image_features = source
        findings[source] = adapter.generate_report(case, max_new_tokens=300)
        suffix = "" if source == "feature_maps" else f".{source}"
        (out_dir / f"{case['case_id']}.findings{suffix}.txt").write_text(findings[source] + "\n")
    adapter.model.model.image_features = "feature_maps"
    print(f"\n{case['case_id']}: findings by image-feature source\n"
          + _side_by_side(findings["feature_maps"], findings["hidden_states"],
                          ("image_features: feature_maps (default)", "image_features: hidden_states")))
    for text in findings.values():
        assert len(text.split()) >= 3 and "<obj>" not in text and "<image>" not in text
