"""`radsteer sweep` and `radsteer generate` end to end on a tiny model; a killed sweep resumes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from protocols.cli import main
from steering.store import StudyStore, read_manifest
from tests.helpers_steering import write_tiny_study

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def test_sweep_writes_the_run_directory(tmp_path, capsys) -> None:
    protocol = write_tiny_study(tmp_path, n_cases=3)
    assert main(["sweep", str(protocol), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    run = tmp_path / "runs" / "tiny"
    assert (run / "protocol.yaml").read_text() == protocol.read_text()
    manifest = read_manifest(run)
    assert manifest["layer_module"] == "model.layers.1" and manifest["vector_space"] == "residual"
    assert len(manifest["protocol_hash"]) == 64 and manifest["feature_bank"]["sha256"]
    assert manifest["packages"]["torch"] and manifest["seeds"]["generation"] == 0
    with StudyStore.open(run) as store:
        assert store.count("generations") == 3 * (1 + 2 * 2)
        assert store.count("features") == 2 and store.count("cases") == 3
    assert "15 generated" in capsys.readouterr().out


def test_sweep_refuses_a_different_protocol_in_the_same_run_dir(tmp_path, capsys) -> None:
    protocol = write_tiny_study(tmp_path, n_cases=1)
    runs = str(tmp_path / "runs")
    assert main(["sweep", str(protocol), "--runs-dir", runs, "--no-progress"]) == 0
    protocol.write_text(protocol.read_text().replace("- -1.0", "- -2.0"))
    assert main(["sweep", str(protocol), "--runs-dir", runs, "--no-progress"]) == 2
    assert "different protocol" in capsys.readouterr().err


def test_killed_sweep_resumes_with_every_row_once(tmp_path) -> None:
    protocol = write_tiny_study(tmp_path, n_cases=24, features=("f0", "f1", "f2"), alphas=(-1.0, -0.5, 0.5, 1.0),
                                max_new_tokens=24, batch_size=2)
    planned = 24 * (1 + 3 * 4)
    cmd = [sys.executable, "-m", "protocols.cli", "sweep", str(protocol), "--runs-dir", str(tmp_path / "runs"),
           "--no-progress"]
    db = tmp_path / "runs" / "tiny" / "study.sqlite"
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stored = 0
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as con:
                    stored = con.execute("select count(*) from generations").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
            if stored >= 20:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"sweep ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with StudyStore.open(db.parent) as store:
        partial = store.count("generations")
    assert 20 <= partial < planned
    subprocess.run(cmd, env=ENV, check=True, capture_output=True)
    with StudyStore.open(db.parent) as store:
        df = store.dataframe("generations")
    assert len(df) == planned
    assert not df.duplicated(["case_id", "feature_id", "alpha", "settings_hash"]).any()


def test_generate_prints_baseline_and_steered(tmp_path, capsys) -> None:
    write_tiny_study(tmp_path)
    case = json.dumps({"prompt": "no pleural effusion ."})
    args = ["generate", "--model-kind", "hf_causal_lm", "--model", str(tmp_path / "model"), "--sae",
            str(tmp_path / "ae.pt"), "--feature", "f2", "--alpha", "-3", "--alpha", "3", "--layer", "1",
            "--case", case, "--max-new-tokens", "6", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["feature"] == "f2" and [s["alpha"] for s in out["steered"]] == [-3.0, 3.0]
    assert out["baseline"] and all(s["text"] != out["baseline"] for s in out["steered"])
    assert main(args[:-1]) == 0
    text = capsys.readouterr().out
    assert "baseline (α = 0)" in text and "steered: f2 α = +3" in text


def test_generate_missing_model_says_what_to_download(tmp_path, capsys) -> None:
    code = main(["generate", "--model-kind", "hf_causal_lm", "--model", str(tmp_path / "absent"),
                 "--case", "{}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "config.json missing" in err and str(tmp_path / "absent") in err


def test_unknown_feature_is_named(tmp_path, capsys) -> None:
    write_tiny_study(tmp_path)
    code = main(["generate", "--model-kind", "hf_causal_lm", "--model", str(tmp_path / "model"), "--sae",
                 str(tmp_path / "ae.pt"), "--feature", "f99", "--case", "{}"])
    assert code == 2 and "unknown feature id 'f99'" in capsys.readouterr().err
