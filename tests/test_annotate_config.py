"""`radsteer annotate RUN_DIR` resolves its queue and blinding settings like every other command:
a flag, else the run's frozen protocol.yaml (`annotation:` section), else the one default.

Real SQLite study stores; the app is built for real (queues dealt and stored); only `launch` (the
blocking HTTP server, tested in test_annotation_server.py and the browser tests) is not started."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
import yaml

from annotation_ui import queues
from annotation_ui.accounts import Accounts
from annotation_ui.app import AnnotationApp
from protocols.cli import main
from protocols.commands.annotate import add_arguments, annotate_config
from steering.store import StudyStore, write_manifest
from tests.helpers_annotation import make_study


def _write_protocol(path: Path, annotation: dict | None) -> Path:
    data = {"name": "t", "model": {"kind": "hf_causal_lm", "path": "m"}, "layer": 1, "alphas": [-1, 1],
            "features": {"source": "sae", "path": "ae.pt", "items": [{"id": "f1"}]},
            "cases": {"path": "cases.jsonl"}}
    if annotation is not None:
        data["annotation"] = annotation
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def _study(tmp_path: Path, annotation: dict | None = None, *, frozen: bool = True) -> Path:
    run_dir = tmp_path / "runs" / "t"
    make_study(run_dir, n_cases=4, n_features=2).close()
    if frozen:
        _write_protocol(run_dir / "protocol.yaml", annotation)
    return run_dir


def _args(run_dir: Path, *flags: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args([str(run_dir), *flags])


KEYS = ("annotate.overlap", "annotate.seed", "annotate.disagreements_first", "annotate.blinded")


def test_the_frozen_protocols_annotation_section_is_used(tmp_path: Path) -> None:
    run_dir = _study(tmp_path, {"overlap": 0.5, "blinded": False, "disagreements_first": False, "seed": 3})
    cfg = annotate_config(_args(run_dir), run_dir)
    assert (cfg.annotate.overlap, cfg.annotate.blinded, cfg.annotate.disagreements_first, cfg.annotate.seed) == \
        (0.5, False, False, 3)
    assert {cfg.sources[k] for k in KEYS} == {"protocol"}
    assert cfg.deviations() == []


def test_flags_override_the_protocol_and_are_listed_as_deviations(tmp_path: Path) -> None:
    run_dir = _study(tmp_path, {"overlap": 0.5, "blinded": False, "disagreements_first": False, "seed": 3})
    cfg = annotate_config(_args(run_dir, "--blinded", "--disagreements-first", "--overlap", "0", "--seed", "9"),
                          run_dir)
    assert (cfg.annotate.overlap, cfg.annotate.blinded, cfg.annotate.disagreements_first, cfg.annotate.seed) == \
        (0.0, True, True, 9)
    assert {cfg.sources[k] for k in KEYS} == {"flag"}
    assert "annotate.blinded: True from --blinded instead of the protocol's False" in cfg.deviations()
    # and the other way round: the protocol blinds, a flag unblinds
    run_dir = _study(tmp_path / "b", {"blinded": True})
    cfg = annotate_config(_args(run_dir, "--show-automated", "--no-disagreements-first"), run_dir)
    assert cfg.annotate.blinded is False and cfg.annotate.disagreements_first is False
    assert "annotate.blinded: False from --show-automated instead of the protocol's True" in cfg.deviations()


def test_without_a_protocol_or_section_the_one_default(tmp_path: Path) -> None:
    from protocols.schema import AnnotationOptions

    schema = AnnotationOptions()
    for run_dir in (_study(tmp_path / "none", frozen=False), _study(tmp_path / "no-section", None)):
        cfg = annotate_config(_args(run_dir), run_dir)
        assert (cfg.annotate.overlap, cfg.annotate.blinded, cfg.annotate.disagreements_first,
                cfg.annotate.seed) == (schema.overlap, schema.blinded, schema.disagreements_first, schema.seed) \
            == (0.2, True, True, 0)
        assert cfg.annotate.annotators_file is None


def _serve(monkeypatch, argv: list[str]) -> tuple[int, list[AnnotationApp]]:
    started: list[AnnotationApp] = []
    monkeypatch.setattr(AnnotationApp, "launch", lambda self, *a, **k: started.append(self))
    return main(["annotate", *argv]), started


def test_the_served_app_gets_the_resolved_settings(tmp_path: Path, monkeypatch, capsys) -> None:
    run_dir = _study(tmp_path, {"blinded": False, "disagreements_first": True, "seed": 5, "overlap": 0})
    rc, started = _serve(monkeypatch, [str(run_dir)])
    assert rc == 0 and len(started) == 1
    app = started[0]
    try:
        assert all(s.show_automated for s in app.services.values())  # blinded: false in the protocol
        config = app.services["change"].config
        assert (config.seed, config.overlap, config.disagreements_first) == (5, 0, True)
        with StudyStore.open(run_dir) as store:
            flagged = queues.disagreement_items(store, "change")
            order = [q.item_key for q in queues.queue_of(store, "local", "change")]
            seeds = {r["seed"] for r in store.rows("queue_items")}
        assert flagged and set(order[:len(flagged)]) == flagged  # disagreements first
        assert seeds == {5}
    finally:
        app.store.close()
    out = capsys.readouterr().out
    assert "blinded=False (protocol)" in out and "seed=5 (protocol)" in out and "overlap=0.2" not in out
    # a flag wins over the protocol, in the app too
    run_dir2 = _study(tmp_path / "2", {"blinded": False})
    rc, started = _serve(monkeypatch, [str(run_dir2), "--blinded", "--no-disagreements-first"])
    try:
        assert rc == 0 and not any(s.show_automated for s in started[0].services.values())
        assert started[0].services["change"].config.disagreements_first is False
    finally:
        started[0].store.close()
    assert "blinded=True (--blinded)" in capsys.readouterr().out


def test_a_run_dir_without_protocol_yaml_serves_with_defaults_and_says_so(tmp_path: Path, monkeypatch,
                                                                           capsys) -> None:
    run_dir = _study(tmp_path, frozen=False)
    rc, started = _serve(monkeypatch, [str(run_dir)])
    try:
        assert rc == 0 and not any(s.show_automated for s in started[0].services.values())
        assert started[0].services["change"].config.disagreements_first is True
    finally:
        started[0].store.close()
    captured = capsys.readouterr()
    assert "has no protocol.yaml: settings are flags and defaults" in captured.err
    assert "blinded=True (default)" in captured.out


@pytest.mark.parametrize("annotation, field", [({"overlap": 1.5}, "annotation.overlap"),
                                               ({"blind": True}, "annotation.blind"),
                                               ({"blinded": "sometimes"}, "annotation.blinded")])
def test_a_malformed_annotation_section_stops_serving_in_one_line(tmp_path: Path, monkeypatch, capsys,
                                                                   annotation: dict, field: str) -> None:
    run_dir = _study(tmp_path, annotation)
    rc, started = _serve(monkeypatch, [str(run_dir)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not started
    assert len(err.splitlines()) == 1 and "protocol.yaml" in err and field in err, err
    rc, started = _serve(monkeypatch, [str(run_dir), "--show-automated"])  # a flag does not paper over it
    assert rc == 2 and not started
    capsys.readouterr()
    # the annotations can still be exported
    assert main(["annotate", str(run_dir), "--export", str(tmp_path / "out.csv")]) == 0
    assert (tmp_path / "out.csv").exists()


def test_conflicting_flags_are_a_usage_error(tmp_path: Path, capsys) -> None:
    run_dir = _study(tmp_path)
    for pair in (["--blinded", "--show-automated"], ["--disagreements-first", "--no-disagreements-first"]):
        with pytest.raises(SystemExit) as exc:
            main(["annotate", str(run_dir), *pair])
        assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_the_protocols_annotators_file_is_relative_to_the_original_protocol(tmp_path: Path, monkeypatch,
                                                                              capsys) -> None:
    original = _write_protocol(tmp_path / "proto" / "p.yaml", {"annotators_file": "readers.json"})
    run_dir = _study(tmp_path, {"annotators_file": "readers.json"})
    write_manifest(run_dir, {"protocol_path": str(original.resolve())})
    readers = tmp_path / "proto" / "readers.json"
    # serving before anyone was added: one line naming the protocol field
    rc, started = _serve(monkeypatch, [str(run_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and not started and "annotation.annotators_file" in err and str(readers) in err
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["annotate", str(run_dir), "--add-user", "alice", "--password-stdin"]) == 0
    assert Accounts(readers).verify("alice", "a-long-password") and not (run_dir / "annotators.json").exists()
    rc, started = _serve(monkeypatch, [str(run_dir)])
    try:
        assert rc == 0 and started[0].accounts is not None and "alice" in started[0].accounts
    finally:
        started[0].store.close()
    # a flag's path is relative to the working directory, and a missing one is named by its flag
    monkeypatch.chdir(tmp_path)
    rc, _ = _serve(monkeypatch, [str(run_dir), "--annotators", "nobody.json"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("radsteer annotate: error: --annotators: ") and "nobody.json" in err
