"""`radsteer mine` → `radsteer interpret` → a protocol that selects features → `radsteer sweep`."""

from __future__ import annotations

import csv
import json

import yaml

from protocols.cli import main
from protocols.loader import load_protocol
from steering.store import BASELINE_FEATURE, StudyStore
from tests.helpers_interpret import write_planted_study


def _mine_and_interpret(tmp_path, capsys):
    protocol, p = write_planted_study(tmp_path)
    runs = tmp_path / "runs"
    assert main(["mine", str(protocol), "--corpus", str(p.corpus), "--runs-dir", str(runs), "--samples", "16",
                 "--zero-samples", "40", "--window", "3", "--no-progress"]) == 0
    capsys.readouterr()
    return protocol, runs


def _select_protocol(tmp_path, **select) -> str:
    path = tmp_path / "steer.yaml"
    base = yaml.safe_load((tmp_path / "protocol.yaml").read_text())
    base["name"] = "tiny-steer"
    base["features"] = {"source": "sae", "path": "ae.pt",
                        "select": {"interpretations": "runs/tiny/stats/interpretations.csv", **select}}
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return str(path)


def test_mine_interpret_select_sweep(tmp_path, capsys) -> None:
    protocol, runs = _mine_and_interpret(tmp_path, capsys)
    run = runs / "tiny"
    assert main(["interpret", str(protocol), "--runs-dir", str(runs), "--dry-run"]) == 0
    assert "would interpret 6 features" in capsys.readouterr().out
    with StudyStore.open(run) as store:
        assert store.count("feature_interpretations") == 0  # the dry run wrote nothing
    assert main(["interpret", str(protocol), "--runs-dir", str(runs), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "6 of 6 features interpreted" in out and "interpretations.csv" in out
    with open(run / "stats" / "interpretations.csv", newline="") as fh:
        rows = {r["feature_id"]: r for r in csv.DictReader(fh)}
    assert rows["f0"]["targets"] == "pacemaker" and float(rows["f0"]["f1"]) >= 0.9
    assert rows["f1"]["targets"] == "pneumothorax" and float(rows["f1"]["f1"]) >= 0.9
    with StudyStore.open(run) as store:
        feats = {r["feature_id"]: r for r in store.rows("features")}
    assert feats["f0"]["description"] == "feature f0"  # the protocol's own wording is kept
    assert json.loads((run / "interpret.json").read_text())["explainer"] == "lexicon"
    assert main(["interpret", str(protocol), "--runs-dir", str(runs), "--no-progress"]) == 0
    assert "6 already done" in capsys.readouterr().out

    devices = load_protocol(_select_protocol(tmp_path, min_f1=0.9, concepts=["device"]))
    assert [(i.id, i.targets) for i in devices.protocol.features.items] == [("f0", ["pacemaker"])]
    both = load_protocol(_select_protocol(tmp_path, min_f1=0.9, concepts=["finding", "device"], max_features=1))
    assert len(both.protocol.features.items) == 1
    steer = _select_protocol(tmp_path, min_f1=0.9)
    loaded = load_protocol(steer)
    assert {i.id for i in loaded.protocol.features.items} == {"f0", "f1"}
    assert main(["sweep", steer, "--runs-dir", str(runs), "--no-progress"]) == 0
    manifest = json.loads((runs / "tiny-steer" / "manifest.json").read_text())
    sel = manifest["feature_selection"]
    assert sel["min_f1"] == 0.9 and sel["features"] == ["f0", "f1"] and len(sel["sha256"]) == 64
    assert manifest["protocol_hash"] == loaded.canonical_hash()
    with StudyStore.open(runs / "tiny-steer") as store:
        steered = {r["feature_id"] for r in store.rows("generations")} - {BASELINE_FEATURE}
        feats = {r["feature_id"]: r for r in store.rows("features")}
    assert steered == {"f0", "f1"} and feats["f0"]["description"] == "mentions of pacemaker"
    assert feats["f0"]["interpretability"] == float(rows["f0"]["f1"])  # the F1 travels with the selection


def test_selection_changes_the_protocol_hash(tmp_path, capsys) -> None:
    protocol, runs = _mine_and_interpret(tmp_path, capsys)
    assert main(["interpret", str(protocol), "--runs-dir", str(runs), "--no-progress"]) == 0
    a = load_protocol(_select_protocol(tmp_path, min_f1=0.9)).canonical_hash()
    b = load_protocol(_select_protocol(tmp_path, min_f1=0.9, max_features=1)).canonical_hash()
    assert a != b


def test_interpret_and_select_errors_are_one_line(tmp_path, capsys) -> None:
    protocol, p = write_planted_study(tmp_path, n_docs=20, per_word=5)
    runs = tmp_path / "runs"
    assert main(["interpret", str(protocol), "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "radsteer mine" in err and len(err.strip().splitlines()) == 1
    assert not (runs / "tiny").exists()  # nothing created
    steer = _select_protocol(tmp_path, min_f1=0.9)
    assert main(["validate", steer]) == 2
    err = capsys.readouterr().err
    assert "features.select.interpretations" in err and "radsteer interpret" in err
    assert main(["validate", _select_protocol(tmp_path, min_f1=1.5)]) == 2
    assert "features.select.min_f1" in capsys.readouterr().err
    steer = _select_protocol(tmp_path, min_f1=0.9)
    bad = tmp_path / "runs" / "tiny" / "stats"
    bad.mkdir(parents=True)
    (bad / "interpretations.csv").write_text("feature_id,description,targets,explainer,f1\nf0,x,pacemaker,lexicon,high\n")
    assert main(["validate", steer]) == 2
    err = capsys.readouterr().err
    assert "interpretations.csv:2: f1 'high' is not a number" in err
    (bad / "interpretations.csv").write_text("feature_id,description,targets,explainer,f1\nf0,x,pacemaker,lexicon,0.5\n")
    assert main(["validate", steer]) == 2
    assert "no feature of" in capsys.readouterr().err


def test_interpret_llm_through_the_cli_against_a_loopback_server(tmp_path, capsys, monkeypatch) -> None:
    from tests.helpers_interpret import add_synthetic_feature, oracle_respond
    from tests.helpers_judge import FakeOpenAIServer
    from tests.helpers_steering import write_tiny_study

    protocol = write_tiny_study(tmp_path, n_cases=1)
    runs = tmp_path / "runs"
    with StudyStore.open(runs / "tiny") as store:
        add_synthetic_feature(store, "f0", "pacemaker")
        add_synthetic_feature(store, "f1", "pneumothorax")
    monkeypatch.setenv("RADSTEER_TEST_CLI_KEY", "sk-cli-SECRET-42")
    mine = runs / "tiny" / "stats" / "my-notes.txt"  # a folder radsteer did not make: never written into
    mine.parent.mkdir()
    mine.write_text("mine")
    with FakeOpenAIServer(api_key="sk-cli-SECRET-42", respond=oracle_respond) as srv:
        args = ["interpret", str(protocol), "--runs-dir", str(runs), "--explainer", "llm", "--judge-model", "m",
                "--judge-base-url", srv.base_url, "--judge-api-key-env", "RADSTEER_TEST_CLI_KEY", "--no-progress"]
        assert main(args) == 2 and srv.requests == 0
        assert "stats" in capsys.readouterr().err and mine.read_text() == "mine"
        mine.unlink()
        assert main(args) == 0
        out = capsys.readouterr().out
        sent = srv.requests
        assert "2 of 2 features interpreted" in out and f"{sent} requests" in out
        assert main([*args, "--force"]) == 0  # answered from the study's cache
        assert srv.requests == sent and "0 requests" in capsys.readouterr().out
    with open(runs / "tiny" / "stats" / "interpretations.csv", newline="") as fh:
        rows = {r["feature_id"]: r for r in csv.DictReader(fh)}
    assert rows["f0"]["explainer"] == "llm" and rows["f0"]["description"] == "mentions of pacemaker"
    assert float(rows["f1"]["f1"]) == 1.0
    assert "sk-cli-SECRET-42" not in (runs / "tiny" / "interpret.json").read_text()
    monkeypatch.delenv("RADSTEER_TEST_CLI_KEY")
    assert main(args) == 2  # the key variable is unset: one clear line, nothing sent
    assert "RADSTEER_TEST_CLI_KEY" in capsys.readouterr().err


def test_interpret_whose_every_llm_call_fails_exits_non_zero(tmp_path, capsys, monkeypatch) -> None:
    """A server that refuses every call (401: wrong key) is never a silent success: counts, one line, exit 1."""
    from tests.helpers_interpret import add_synthetic_feature, oracle_respond
    from tests.helpers_judge import FakeOpenAIServer
    from tests.helpers_steering import write_tiny_study

    protocol = write_tiny_study(tmp_path, n_cases=1)
    runs = tmp_path / "runs"
    with StudyStore.open(runs / "tiny") as store:
        add_synthetic_feature(store, "f0", "pacemaker")
    monkeypatch.setenv("RADSTEER_TEST_CLI_KEY", "sk-wrong")
    with FakeOpenAIServer(api_key="sk-right", respond=oracle_respond) as srv:
        code = main(["interpret", str(protocol), "--runs-dir", str(runs), "--explainer", "llm", "--judge-model", "m",
                     "--judge-base-url", srv.base_url, "--judge-api-key-env", "RADSTEER_TEST_CLI_KEY",
                     "--no-progress"])
        assert srv.statuses[401] >= 1
    err = capsys.readouterr().err
    assert code == 1
    assert "0 verdicts" in err and "produced no verdicts" in err and "sk-wrong" not in err
