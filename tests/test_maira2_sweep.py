"""MAIRA-2 in the steering engine and the CLI, on the tiny checkpoint; the JSONL case format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from protocols.cases import read_cases_jsonl
from protocols.cli import main
from steering.engine import GenerationSettings, SteeringEngine, SteeringSpec, plan_rows
from steering.errors import RadsteerError
from steering.feature_bank import FeatureBank
from steering.maira2.adapter import Maira2Adapter
from steering.maira2.cases import parse_case, resolve_case_images
from tests import maira2_fixture as fx

maira2_snapshot, maira2_adapter = fx.maira2_snapshot, fx.maira2_adapter  # pytest fixtures


def read_cases(path) -> list[dict]:
    """A MAIRA-2 cases file read as a protocol reads it (one reader: protocols.cases)."""
    path = Path(path)
    return read_cases_jsonl(path, lambda row, where: parse_case(row, base_dir=path.parent, where=where))


def _bank() -> FeatureBank:
    g = torch.Generator().manual_seed(0)
    return FeatureBank(decoder=torch.randn(2, 32, generator=g), ids=["f0", "f1"])


def test_vision_tower_runs_once_per_case_in_a_sweep(maira2_snapshot, maira2_adapter) -> None:
    cases = {c["case_id"]: c for c in read_cases(maira2_snapshot.cases_file)}
    rows = plan_rows(list(cases), ["f0", "f1"], [-4.0, 4.0])  # 5 rows per case
    tower_batches: list[int] = []
    handle = maira2_adapter.model.model.vision_tower.register_forward_hook(
        lambda _m, args, _out: tower_batches.append(int(args[0].shape[0]))
    )
    try:
        for batch_size in (3, 10):  # rows of a case split over batches, or sharing one batch
            tower_batches.clear()
            engine = SteeringEngine(maira2_adapter, _bank(), spec=SteeringSpec(layer=1, exclude=("image",)),
                                    settings=GenerationSettings(max_new_tokens=4), batch_size=batch_size)
            results = engine.generate(cases, rows)
            assert len(results) == 10
            assert sorted(tower_batches) == [1, 3]  # one call per case: its 1 or 3 images together
            assert dict(engine.extras_calls) == {"full": 1, "frontal-only": 1}
    finally:
        handle.remove()
    # steering at layer 1 changes some reports (the rows really carry different vectors)
    base = {r.row.case_id: r.token_ids for r in results if r.row.is_baseline}
    assert any(r.token_ids != base[r.row.case_id] for r in results if not r.row.is_baseline)


def test_image_positions_can_be_left_unsteered(maira2_snapshot, maira2_adapter) -> None:
    case = maira2_snapshot.study()
    ids = torch.tensor([maira2_adapter.prompt_ids(case)])
    excluded = maira2_adapter.excluded_token_ids(("image",))
    assert excluded == {maira2_adapter.image_token_id}
    assert int(torch.isin(ids, torch.tensor(sorted(excluded))).sum()) == 3 * fx.TOKENS_PER_IMAGE
    assert maira2_adapter.default_layer == 1  # 15 on the 32-layer model; the middle of a small one


def test_grounded_adapter(maira2_snapshot) -> None:
    adapter = Maira2Adapter.from_pretrained(maira2_snapshot.path, device="cpu", grounded=True)
    assert adapter.name == "maira-2-grounded" and adapter.default_max_new_tokens == 450
    assert "bounding boxes" in adapter.prompt_text(maira2_snapshot.study())
    assert "<" not in adapter.generate_report(maira2_snapshot.study(), max_new_tokens=5)


def test_radsteer_generate_with_a_maira2_snapshot(maira2_snapshot, tmp_path, capsys) -> None:
    images = tmp_path / "imgs"
    shutil.copytree(maira2_snapshot.images["frontal"].parent, images)
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"case_id": "c1", "frontal": "imgs/frontal.png", "lateral": "imgs/lateral.png",
                                "prior_frontal": "imgs/prior.png", "indication": "Cough."}))
    argv = ["generate", "--model-kind", "maira2", "--model", str(maira2_snapshot.path), "--case", str(case),
            "--layer", "1", "--max-new-tokens", "4", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["layer"] == 1 and isinstance(out["baseline"], str)
    case.write_text(json.dumps({"case_id": "c1", "frontal": "imgs/missing.png"}))
    assert main(argv) == 2
    assert "frontal image of case 'c1' not found" in capsys.readouterr().err


# -- the JSONL case format ---------------------------------------------------------------------
def _write(path, *rows) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def test_cases_file_resolves_images_relative_to_itself(maira2_snapshot) -> None:
    cases = read_cases(maira2_snapshot.cases_file)
    assert [c["case_id"] for c in cases] == ["full", "frontal-only"]
    full, single = cases
    assert full["frontal"] == str(maira2_snapshot.images["frontal"].resolve())
    assert full["prior_report"] == "Clear lungs." and full["technique"] is None and full["split"] == "test"
    assert "split" not in single  # assigned by the protocol's seeded split, not here
    assert single["lateral"] is None and single["prior_frontal"] is None and single["technique"] == "PA view."


def test_case_errors_name_line_and_field(maira2_snapshot, tmp_path) -> None:
    img = str(maira2_snapshot.images["frontal"])
    f = tmp_path / "cases.jsonl"
    cases = [
        ({"frontal": img}, r"cases.jsonl:1: case_id: missing"),
        ({"case_id": "a"}, r"cases.jsonl:1: case 'a' has no 'frontal' image"),
        ({"case_id": "a", "frontal": "nope.png"}, r"cases.jsonl:1: frontal image of case 'a' not found: .*nope.png"),
        ({"case_id": "a", "frontal": img, "lateral": "x/l.png"}, r"lateral image of case 'a' not found"),
        ({"case_id": "a", "frontal": img, "fronal": img}, r"unknown field 'fronal' — did you mean 'frontal'"),
        ({"case_id": "a", "frontal": img, "split": "train"}, r"cases.jsonl:1: split must be 'tune' or 'test'"),
        ({"case_id": "a", "frontal": img, "indication": 3}, r"field 'indication' of case 'a' must be a string"),
        ("{oops", r"cases.jsonl:1: not valid JSON"),
    ]
    for row, message in cases:
        _write(f, row)
        with pytest.raises(RadsteerError, match=message):
            read_cases(f)
    _write(f, {"case_id": "a", "frontal": img}, "", {"case_id": "a", "frontal": img})
    with pytest.raises(RadsteerError, match=r"cases.jsonl:3: case_id 'a' repeats line 1"):
        read_cases(f)
    _write(f, {"case_id": "a", "frontal": img, "reference_findings": "kept"})
    assert read_cases(f)[0]["reference_findings"] == "kept"  # extra columns pass through


def test_resolve_case_images_for_protocol_rows(maira2_snapshot) -> None:
    row = {"case_id": "p1", "frontal": f"{maira2_snapshot.path.name}-images/frontal.png", "split": "tune"}
    case = resolve_case_images(row, maira2_snapshot.cases_file)
    assert case["frontal"] == str(maira2_snapshot.images["frontal"].resolve()) and case["split"] == "tune"
    with pytest.raises(RadsteerError, match=r"cases.jsonl \(case 'p1'\): frontal image of case 'p1' not found"):
        resolve_case_images({**row, "frontal": "missing.png"}, maira2_snapshot.cases_file)


def test_image_features_choice_is_recorded_in_the_manifest(maira2_snapshot, maira2_adapter, tmp_path, capsys) -> None:
    import yaml

    g = torch.Generator().manual_seed(0)
    d = maira2_adapter.hidden_size
    torch.save({"W_enc": torch.randn(d, 2, generator=g), "b_enc": torch.zeros(2),
                "W_dec": torch.randn(2, d, generator=g), "b_dec": torch.zeros(d)}, tmp_path / "ae.pt")
    protocol = {
        "name": "m2", "model": {"kind": "maira2", "path": str(maira2_snapshot.path), "dtype": "float32",
                                "device": "cpu", "image_features": "hidden_states"},
        "features": {"source": "sae", "path": "ae.pt", "items": [{"id": "f0", "targets": ["pleural_effusion"]}]},
        "layer": 1, "alphas": [1.0], "generation": {"max_new_tokens": 2, "batch_size": 2},
        "cases": {"path": str(maira2_snapshot.cases_file), "limit": 1},
    }
    path = tmp_path / "m2.yaml"
    path.write_text(yaml.safe_dump(protocol, sort_keys=False))
    runs = tmp_path / "runs"
    assert main(["sweep", str(path), "--runs-dir", str(runs), "--no-progress"]) == 0
    manifest = json.loads((runs / "m2" / "manifest.json").read_text())
    assert manifest["model"]["image_features"] == "hidden_states" and manifest["model"]["name"] == "maira-2-hidden_states"
    # the default is recorded too, and other model kinds refuse the option
    protocol["model"].pop("image_features")
    protocol["name"] = "m2-default"
    path.write_text(yaml.safe_dump(protocol, sort_keys=False))
    assert main(["sweep", str(path), "--runs-dir", str(runs), "--no-progress"]) == 0
    default = json.loads((runs / "m2-default" / "manifest.json").read_text())
    assert default["model"]["image_features"] == "feature_maps" and default["settings_hash"] != manifest["settings_hash"]
    protocol["model"].update(kind="hf_causal_lm", image_features="hidden_states")
    path.write_text(yaml.safe_dump(protocol, sort_keys=False))
    capsys.readouterr()
    assert main(["validate", str(path)]) == 2
    assert "image_features applies to MAIRA-2 only" in capsys.readouterr().err
