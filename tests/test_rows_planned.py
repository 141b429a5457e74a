"""The report's "rows planned" on both bundled protocols: what the sweep will plan, read back by stats.

The sweep records its plan in manifest.json (Study.plan, from the validated protocol); without a
manifest, stats reads the frozen protocol's own fields. Both must agree with `steering.engine.plan_rows`
— the rows the sweep actually generates — on `protocols/demo.yaml` and `protocols/maira2_paper.yaml`.
(The end-to-end "planned = stored" check on a real run is in tests/test_one_path.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml
from PIL import Image

from evaluation.stats import _planned, study_flow
from evaluation.study_data import StudyData
from protocols.study import Study
from steering.engine import plan_rows

ROOT = Path(__file__).resolve().parents[1]


def _data(study: Study, *, manifest: dict, protocol: dict | None) -> StudyData:
    empty = pd.DataFrame()
    return StudyData(run_dir=None, cases=pd.DataFrame({"case_id": list(study.cases)}), features=empty,
                     generations=pd.DataFrame(columns=["id", "feature_id"]), steered=empty, verdicts=empty,
                     annotations=empty, reads=empty, majority=empty, labels=empty, manifest=manifest,
                     protocol=protocol)


def _expected(study: Study) -> int:
    return len(plan_rows(list(study.cases), [f.id for f in study.protocol.features.items], study.protocol.alphas))


def _demo_copy(tmp_path: Path) -> Path:
    """The bundled demo protocol beside the interpretations it selects from (what `radsteer demo`
    writes before its steering study): three findings/devices above F1 0.75, one below."""
    import shutil

    shutil.copy(ROOT / "protocols" / "demo.yaml", tmp_path / "demo.yaml")
    shutil.copytree(ROOT / "protocols" / "data", tmp_path / "data")
    stats = tmp_path / "runs" / "demo-features" / "stats"
    stats.mkdir(parents=True)
    rows = [("f1", "mentions of pacemaker", "pacemaker", 1.0), ("f2", "mentions of cardiomegaly", "cardiomegaly", 0.9),
            ("f3", "mentions of pleural effusion", "pleural_effusion", 0.8), ("f4", "mentions of oedema",
                                                                            "pulmonary_edema", 0.4)]
    (stats / "interpretations.csv").write_text(
        "feature_id,description,targets,explainer,f1,precision,recall,n_active,n_inactive\n"
        + "".join(f"{f},{d},{t},lexicon,{f1},{f1},{f1},10,10\n" for f, d, t, f1 in rows))
    return tmp_path / "demo.yaml"


def test_demo_protocol_rows_planned(tmp_path: Path) -> None:
    protocol = _demo_copy(tmp_path)
    study = Study.from_protocol(protocol, tmp_path / "runs")
    assert [f.id for f in study.protocol.features.items] == ["f1", "f2", "f3"]  # F1 ≥ 0.75 only
    expected = _expected(study)
    assert expected == len(study.cases) * (1 + 3 * len([a for a in study.protocol.alphas if a]))
    plan = study.plan()
    assert plan["rows"] == expected and plan["cases"] == len(study.cases)
    assert _planned(_data(study, manifest={"plan": plan}, protocol=None))[0] == expected
    # no manifest: the frozen protocol's fields (alphas, features.items) over the registered cases
    raw = yaml.safe_load(protocol.read_text())
    fallback, how = _planned(_data(study, manifest={}, protocol=raw))
    features = raw["features"]
    if features.get("items_file") or features.get("select"):
        assert fallback is None and "from a file" in how
    else:
        assert fallback == expected
    flow = study_flow(_data(study, manifest={"plan": plan}, protocol=raw))
    assert flow.loc[flow.stage == "rows planned (protocol)", "count"].item() == str(expected)


def test_maira2_paper_protocol_rows_planned(tmp_path: Path, monkeypatch) -> None:
    img = tmp_path / "f.png"
    Image.new("L", (8, 8)).save(img)
    cases = tmp_path / "cases.jsonl"
    cases.write_text("".join(json.dumps({"case_id": f"c{i}", "frontal": "f.png", "indication": "Dyspnoea"}) + "\n"
                             for i in range(3)))
    feats = tmp_path / "features.jsonl"
    feats.write_text("".join(json.dumps({"id": f"f{i}", "description": "d", "targets": ["pleural_effusion"]}) + "\n"
                             for i in (10, 20, 30, 40)))
    monkeypatch.setenv("RADSTEER_MAIRA2_PATH", str(tmp_path / "model"))
    monkeypatch.setenv("RADSTEER_MAIRA2_SAE", str(tmp_path / "ae.pt"))
    monkeypatch.setenv("RADSTEER_MAIRA2_FEATURES", str(feats))
    monkeypatch.setenv("RADSTEER_MAIRA2_CASES", str(cases))
    study = Study.from_protocol(ROOT / "protocols" / "maira2_paper.yaml", tmp_path / "runs")
    expected = _expected(study)
    n_alpha = sum(1 for a in study.protocol.alphas if a != 0)
    assert expected == 3 * (1 + 4 * n_alpha)  # the features come from the items file
    plan = study.plan()
    assert plan == {"rows": expected, "cases": 3, "features": 4, "alphas": n_alpha}
    assert _planned(_data(study, manifest={"plan": plan}, protocol=None)) == (
        expected, f"3 cases × (1 + 4 features × {n_alpha} α)")
    # the frozen protocol alone cannot count features merged from a file: said so, never guessed
    raw = yaml.safe_load((ROOT / "protocols" / "maira2_paper.yaml").read_text())
    rows, how = _planned(_data(study, manifest={}, protocol=raw))
    assert rows is None and "from a file" in how
