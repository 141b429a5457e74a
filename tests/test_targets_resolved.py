"""Target concepts are resolved once, early (issue 11 / issue 12 item 6): `validate`, `sweep` and
`label` refuse an unknown name with the nearest known names before anything runs, plain-English
names of the new families resolve, and the resolved ids are recorded in manifest.json."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from protocols.cli import main
from steering.store import read_manifest
from tests.helpers_steering import write_tiny_study


def _set_targets(protocol: Path, targets: list[str]) -> None:
    data = yaml.safe_load(protocol.read_text())
    data["features"]["items"][0]["targets"] = targets
    protocol.write_text(yaml.safe_dump(data, sort_keys=False))


def _line_of(protocol: Path, text: str) -> int:
    return next(i for i, line in enumerate(protocol.read_text().splitlines(), 1) if text in line)


def test_validate_and_sweep_refuse_an_unknown_target_with_suggestions(tmp_path, capsys) -> None:
    protocol = write_tiny_study(tmp_path, n_cases=1)
    _set_targets(protocol, ["pleural_effusion", "worsning"])
    line = _line_of(protocol, "worsning")
    for command in (["validate", str(protocol)], ["sweep", str(protocol), "--runs-dir", str(tmp_path / "runs")]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"{protocol}:{line}: features.items[0].targets[1]: target 'worsning' is not a concept" in err, err
        assert "did you mean: worsening" in err and "radsteer concepts" in err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_the_audits_no_such_concept_is_refused(tmp_path, capsys) -> None:
    protocol = write_tiny_study(tmp_path, n_cases=1)
    _set_targets(protocol, ["no_such_concept"])
    assert main(["validate", str(protocol)]) == 2
    assert "target 'no_such_concept' is not a concept id, name or synonym" in capsys.readouterr().err


def test_an_unknown_target_in_an_items_file_names_that_file_and_line(tmp_path, capsys) -> None:
    protocol = write_tiny_study(tmp_path, n_cases=1)
    data = yaml.safe_load(protocol.read_text())
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"id": "f9", "targets": ["effusion"]}) + "\n"
                     + json.dumps({"id": "f8", "targets": ["recomendation"]}) + "\n")
    data["features"]["items_file"] = "more.jsonl"
    protocol.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["validate", str(protocol)]) == 2
    err = capsys.readouterr().err
    assert f"{extra}: line 2: targets[0]: target 'recomendation'" in err and "did you mean: recommendation" in err


def test_plain_english_family_names_pass_and_the_manifest_records_the_ids(tmp_path, capsys) -> None:
    protocol = write_tiny_study(tmp_path, n_cases=1)
    _set_targets(protocol, ["comparison with prior", "Worsening", "follow-up recommendation", "effusions"])
    assert main(["validate", str(protocol)]) == 0
    capsys.readouterr()
    assert main(["sweep", str(protocol), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    manifest = read_manifest(tmp_path / "runs" / "tiny")
    first, second = yaml.safe_load(protocol.read_text())["features"]["items"][:2]
    assert manifest["target_concepts"] == {
        first["id"]: ["comparison", "worsening", "recommendation", "pleural_effusion"],
        second["id"]: ["pleural_effusion"]}


def test_label_refuses_unknown_targets_before_extracting(tmp_path, capsys) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "a", "baseline": "x", "steered": "y", "target": "stability",
                                 "direction": 1}) + "\n"
                     + json.dumps({"id": "b", "baseline": "x", "steered": "y", "target": "no_such_concept",
                                   "direction": 1}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["label", str(pairs), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{pairs}:2: field 'target': target 'no_such_concept'" in err and not out.exists()


def test_radsteer_label_labels_the_family_pairs_as_written(tmp_path, capsys) -> None:
    """The 75 hand-written family pairs through the real CLI: every label as written."""
    pairs = yaml.safe_load((Path(__file__).parent / "data" / "family_pairs.yaml").read_text(encoding="utf-8"))
    src = tmp_path / "family.jsonl"
    src.write_text("".join(json.dumps({k: p[k] for k in ("id", "baseline", "steered", "target", "direction")}) + "\n"
                           for p in pairs))
    out = tmp_path / "labels.jsonl"
    assert main(["label", str(src), "-o", str(out), "--quiet"]) == 0
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert {pid: rows[pid]["label"] for pid in rows} == {p["id"]: p["label"] for p in pairs}
    worse = rows["lon-stable-to-increased"]
    assert worse["evidence"]["targets"] == ["worsening"]
    assert worse["evidence"]["on_target"][0]["change_after"] == "increased"
