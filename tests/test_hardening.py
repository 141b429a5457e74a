"""Bad inputs refused in one line, exit 2, nothing created (issue 11, "Protocols and inputs")."""

from __future__ import annotations

import pytest
import yaml

from protocols.cli import main
from tests.helpers_steering import write_tiny_study


def _edit(path, **changes):
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_split_selecting_no_case_is_refused(tmp_path, capsys) -> None:
    path = _edit(write_tiny_study(tmp_path, n_cases=3), cases__split={"tune_fraction": 0.0, "use": "tune"})
    line = next(i + 1 for i, t in enumerate(path.read_text().splitlines()) if t.strip().startswith("use:"))
    for argv in (["validate", str(path)], ["sweep", str(path), "--runs-dir", str(tmp_path / "runs")],
                 ["run", str(path), "--runs-dir", str(tmp_path / "runs")]):
        assert main(argv) == 2
        err = _one_line_error(capsys)
        assert f"{path}:{line}: cases.split.use: no cases selected" in err, err
    assert not (tmp_path / "runs").exists()


def test_duplicate_yaml_keys_are_refused_with_their_line(tmp_path, capsys) -> None:
    path = write_tiny_study(tmp_path, n_cases=2)
    text = path.read_text()
    assert "layer: 1\n" in text
    path.write_text(text.replace("layer: 1\n", "layer: 0\nlayer: 1\n"))
    second = path.read_text().splitlines().index("layer: 1") + 1
    assert main(["validate", str(path)]) == 2
    err = _one_line_error(capsys)
    assert f"{path}:{second}: duplicate key 'layer' (first on line {second - 1})" in err
    # nested mappings and the items_file YAML too
    path.write_text(text.replace("  dtype: float32\n", "  dtype: float32\n  dtype: bfloat16\n"))
    assert main(["validate", str(path)]) == 2
    assert "duplicate key 'dtype'" in _one_line_error(capsys)
    items = tmp_path / "more.yaml"
    items.write_text("- id: f1\n  description: a\n  description: b\n")
    path.write_text(text)
    _edit(path, features__items_file="more.yaml")
    assert main(["validate", str(path)]) == 2
    assert f"{items}:3: duplicate key 'description'" in _one_line_error(capsys)


def test_label_refuses_unknown_fields_naming_them(tmp_path, capsys) -> None:
    import json

    row = {"id": 1, "baseline": "Lungs clear.", "steered": "Small left pleural effusion.",
           "target": "pleural_effusion", "direction": 1}
    src = tmp_path / "pairs.jsonl"
    src.write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": 2, "dirction": -1}) + "\n")
    assert main(["label", str(src), "-o", str(tmp_path / "out.jsonl")]) == 2
    err = _one_line_error(capsys)
    assert f"{src}:2:" in err and "unknown field 'dirction' (did you mean 'direction'?)" in err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("device", ["cuda:7", "mps", "tpu:0", "gpu"])
def test_a_device_this_machine_lacks_is_one_line(tmp_path, capsys, device) -> None:
    import torch

    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    path = _edit(write_tiny_study(tmp_path, n_cases=2), model__device=device)
    line = next(i + 1 for i, t in enumerate(path.read_text().splitlines()) if t.strip().startswith("device:"))
    for argv in (["validate", str(path)], ["sweep", str(path), "--runs-dir", str(tmp_path / "runs")]):
        assert main(argv) == 2
        err = _one_line_error(capsys)
        assert f"{path}:{line}: model.device:" in err and "cpu" in err, err
    assert not (tmp_path / "runs").exists()
    from steering.errors import RadsteerError
    from steering.models import load_adapter

    with pytest.raises(RadsteerError, match="it has cpu|this machine has cpu"):
        load_adapter("demo", device=device)
