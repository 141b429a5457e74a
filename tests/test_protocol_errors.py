"""Every protocol error ends in one line naming the place, exit status 2, and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from protocols.cli import main
from steering.errors import RadsteerError
from tests.helpers_steering import write_tiny_study


@pytest.fixture(scope="module")
def study_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    write_tiny_study(root, n_cases=3)
    return root


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def _write(root: Path, data: dict, name: str = "bad.yaml") -> Path:
    path = root / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _base(root: Path) -> dict:
    return yaml.safe_load((root / "protocol.yaml").read_text())


def _no_layer(d: dict) -> None:
    del d["layer"]


def _wide_sae(d: dict, root: Path) -> None:
    g = torch.Generator().manual_seed(3)
    torch.save({"W_enc": torch.randn(16, 6, generator=g), "b_enc": torch.zeros(6),
                "W_dec": torch.randn(6, 16, generator=g), "b_dec": torch.zeros(16)}, root / "wide_ae.pt")
    d["features"]["path"] = "wide_ae.pt"


def _bad_json_cases(d: dict, root: Path) -> None:
    (root / "broken.jsonl").write_text('{"case_id": "a", "prompt": "x"}\n{"case_id": "b", "prompt": \n')
    d["cases"]["path"] = "broken.jsonl"


CASES = {
    # name: (mutation, expected substrings of the one-line error)
    "missing field": (_no_layer, ["bad.yaml:1:", "layer: Field required"]),
    "wrong type": (lambda d: d.update(layer="fifteen"), ["bad.yaml:", "layer:", "valid integer"]),
    "unknown feature id": (lambda d: d["features"]["items"][0].update(id="f999"),
                           ["bad.yaml:", "features.items[0].id:", "unknown feature id 'f999'"]),
    "alpha not a number": (lambda d: d.update(alphas=[1.0, "strong"]), ["bad.yaml:", "alphas[1]:", "valid number"]),
    "alpha a boolean": (lambda d: d.update(alphas=[True]), ["bad.yaml:", "alphas[0]:", "boolean"]),
    "alpha not finite": (lambda d: d.update(alphas=[float("inf")]), ["bad.yaml:", "alphas[0]:", "finite"]),
    "sae width": (_wide_sae, ["bad.yaml:", "features.path:", "SAE width 16 ≠ model width 32"]),
    "cases file missing": (lambda d: d["cases"].update(path="nowhere.jsonl"),
                           ["bad.yaml:", "cases.path:", "cases file not found", "nowhere.jsonl"]),
    "cases file unreadable": (_bad_json_cases, ["bad.yaml:", "cases.path:", "broken.jsonl:2: not valid JSON"]),
    "layer out of range": (lambda d: d.update(layer=7), ["bad.yaml:", "layer:", "has 3 decoder layers"]),
    "unknown field": (lambda d: d["generation"].update(max_tokens=5), ["generation.max_tokens:", "Extra inputs"]),
    "model dir missing": (lambda d: d["model"].update(path="no_model"), ["model.path:", "config.json missing"]),
    "env var unset": (lambda d: d["features"].update(path="${RADSTEER_TEST_UNSET_VAR}/ae.pt"),
                      ["features.path:", "RADSTEER_TEST_UNSET_VAR is not set"]),
}


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_protocol_error_is_one_line_exit_2_nothing_written(study_root, tmp_path, case, command, capsys) -> None:
    os.environ.pop("RADSTEER_TEST_UNSET_VAR", None)
    mutate, expected = CASES[case]
    data = _base(study_root)
    if mutate.__code__.co_argcount == 2:
        mutate(data, study_root)
    else:
        mutate(data)
    path = _write(study_root, data)
    runs = tmp_path / "runs"
    before = _snapshot(study_root)
    assert main([command, str(path), "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for s in expected:
        assert s in err, (s, err)
    assert not runs.exists()
    assert _snapshot(study_root) == before


def test_judge_key_missing_stops_run_before_anything_is_written(study_root, tmp_path, capsys) -> None:
    data = _base(study_root)
    data["evaluation"] = {"judge": {"model": "gpt-x", "api_key_env": "RADSTEER_TEST_NO_KEY"}}
    os.environ.pop("RADSTEER_TEST_NO_KEY", None)
    path = _write(study_root, data, "judge.yaml")
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "judge.yaml:" in err and "RADSTEER_TEST_NO_KEY is not set" in err
    assert not (tmp_path / "runs").exists()


def test_a_key_in_the_protocol_is_refused(study_root, tmp_path, capsys) -> None:
    data = _base(study_root)
    data["evaluation"] = {"judge": {"model": "gpt-x", "api_key": "sk-secret"}}
    path = _write(study_root, data, "key.yaml")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "evaluation.judge.api_key" in err and "sk-secret" not in err


def test_validate_prints_an_ok_summary_and_writes_nothing(study_root, tmp_path, capsys) -> None:
    before = _snapshot(study_root)
    assert main(["validate", str(study_root / "protocol.yaml"), "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "radsteer validate: OK" in out
    assert "hidden size 32, 3 layers" in out and "features: 2 (sae: 6 vectors × 32)" in out
    assert "rows: 15 (3 baselines + 3 × 2 features × 2 α)" in out
    assert _snapshot(study_root) == before and not (tmp_path / "runs").exists()


def test_bundled_protocols_load(monkeypatch, tmp_path) -> None:
    from protocols.loader import load_protocol

    concept = load_protocol(Path("protocols/concept_demo.yaml")).protocol
    assert concept.model.kind == "demo" and len(concept.features.items) >= 6 and concept.evaluation.judge is None
    assert any(a < 0 for a in concept.alphas) and any(a > 0 for a in concept.alphas)
    assert {f.id for f in concept.features.items} <= {c.id for c in concept.features.concepts}
    features = load_protocol(Path("protocols/demo_features.yaml")).protocol
    assert features.features.source == "sae" and not features.features.items and features.model.prompt == "few_shot"
    # The demo's steering study selects its features from demo_features' interpretations: until
    # `radsteer interpret` has written them, loading it says what to run.
    with pytest.raises(RadsteerError, match="interpretations.csv not found: run `radsteer interpret`"):
        load_protocol(Path("protocols/demo.yaml"))
    monkeypatch.setenv("RADSTEER_MAIRA2_PATH", "/models/maira-2")
    monkeypatch.setenv("RADSTEER_MAIRA2_SAE", "/models/maira-2-sae/layer15_ef4")
    monkeypatch.setenv("RADSTEER_MAIRA2_CASES", "/data/cases.jsonl")
    (tmp_path / "features.jsonl").write_text(
        '{"id": "f12", "description": "pleural effusion", "targets": ["pleural_effusion"]}\n'
        '{"id": 345, "description": "pacemaker", "targets": ["pacemaker"]}\n')
    monkeypatch.setenv("RADSTEER_MAIRA2_FEATURES", str(tmp_path / "features.jsonl"))
    paper = load_protocol(Path("protocols/maira2_paper.yaml")).protocol
    assert paper.model.kind == "maira2" and paper.model.path == "/models/maira-2" and paper.layer == 15
    assert sorted(paper.alphas) == [-10.0, 10.0] and paper.steering.positions == "all"
    assert paper.generation.max_new_tokens == 300 and not paper.generation.do_sample
    assert paper.evaluation.extractor == "radgraph-xl" and paper.evaluation.judge is not None
    assert paper.features.path.startswith("/models/maira-2-sae/layer15_ef4")
    assert [f.id for f in paper.features.items] == ["f12", "345"] and paper.evaluation.judge.base_url is None


def test_items_file_errors_name_the_file_and_line(study_root, tmp_path, capsys) -> None:
    data = _base(study_root)
    (tmp_path / "items.jsonl").write_text('{"id": "f1"}\n{"id": "f3", "targets": "pleural_effusion"}\n')
    data["features"]["items_file"] = str(tmp_path / "items.jsonl")
    path = _write(study_root, data, "items.yaml")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "items.jsonl: line 2: targets:" in err and "valid list" in err


def test_maira2_reports_get_maira2s_length_unless_the_protocol_says() -> None:
    """A MAIRA-2 protocol without generation.max_new_tokens gets the official 300 (450 grounded), as
    `radsteer generate` does; 64 cut its reports short. Other models keep 64, so their hash too."""
    from protocols.schema import Protocol

    base = dict(name="x", features={"source": "sae", "path": "ae.pt", "items": [{"id": "f1"}]}, layer=1,
                alphas=[1.0], cases={"path": "cases.jsonl"})
    length = lambda **kw: Protocol.model_validate(dict(base, **kw)).generation.max_new_tokens  # noqa: E731
    assert length(model={"kind": "maira2", "path": "m"}) == 300
    assert length(model={"kind": "maira2", "path": "m", "grounded": True}, generation={"batch_size": 4}) == 450
    assert length(model={"kind": "maira2", "path": "m"}, generation={"max_new_tokens": 64}) == 64  # said: kept
    assert length(model={"kind": "demo"}) == 64
    assert length(model={"kind": "hf_causal_lm", "path": "m"}) == 64
