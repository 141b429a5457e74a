"""protocols/config.py: one resolution (flag, else protocol, else the one default) for every command."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest
import yaml

from protocols.cli import main
from protocols.config import BY_KEY, SETTINGS, add_options, resolve, resolve_for_run_dir
from protocols.loader import load_protocol
from protocols.schema import Protocol
from steering.errors import RadsteerError

ROOT = Path(__file__).resolve().parents[1]


def _schema_default(path: tuple[str, ...]):
    model = Protocol
    for name in path[:-1]:
        ann = model.model_fields[name].annotation
        model = next(a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type))
    field = model.model_fields[path[-1]]
    return None if field.is_required() else field.get_default(call_default_factory=True)


def test_every_protocol_backed_setting_has_the_schemas_default() -> None:
    for s in SETTINGS:
        if s.protocol and s.key != "stats.seed":  # the protocol's seed seeds more than the bootstrap
            assert _schema_default(s.protocol) == s.default, s.key
    # the settled disagreements
    assert BY_KEY["report.examples"].default == 12
    assert BY_KEY["judge.concurrency"].default == 8
    from evaluation.judge import JudgeConfig

    assert JudgeConfig(model="m").concurrency == 8


def _parse(command: str, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_options(p, command)
    return p.parse_args(argv)


def _protocol(tmp_path: Path, **extra) -> Path:
    data = {"name": "t", "model": {"kind": "hf_causal_lm", "path": "m"}, "layer": 1, "alphas": [-1, 1],
            "features": {"source": "sae", "path": "ae.pt", "items": [{"id": "f1"}]},
            "cases": {"path": "cases.jsonl"}, **extra}
    path = tmp_path / "proto" / "p.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_flag_beats_protocol_beats_default_and_deviations_are_listed(tmp_path: Path) -> None:
    path = _protocol(tmp_path, report={"examples": 3, "multiplicity": "fdr_bh"}, seed=7,
                     evaluation={"extractor": "lexicon", "radgraph_cache": "rg",
                                 "judge": {"model": "j", "concurrency": 2, "api_key_env": None}})
    loaded = load_protocol(path)
    cfg = resolve("run", _parse("run", ["--examples", "5"]), protocol=loaded.protocol, protocol_dir=loaded.base_dir)
    assert cfg.report.examples == 5 and cfg.sources["report.examples"] == "flag"
    assert cfg.stats.correction == "fdr_bh" and cfg.sources["stats.correction"] == "protocol"
    assert cfg.stats.seed == 7 and cfg.stats.level == 0.05 and cfg.sources["stats.level"] == "default"
    # a protocol's path is relative to the protocol file, whatever the working directory
    assert cfg.evaluate.radgraph_cache == str((path.parent / "rg").resolve())
    assert cfg.deviations() == ["report.examples: 5 from --examples instead of the protocol's 3"]
    judge = cfg.judge_config()
    assert judge.model == "j" and judge.concurrency == 2 and judge.api_key_env is None
    assert resolve("run", _parse("run", ["--no-judge"]), protocol=loaded.protocol).judge_config() is None
    # no protocol: the defaults
    bare = resolve("report", _parse("report", []))
    assert bare.report.examples == 12 and bare.stats.correction == "holm" and bare.report.pdf is False
    with pytest.raises(RadsteerError, match="without --judge-model"):
        resolve("evaluate", _parse("evaluate", ["--concurrency", "3"])).judge_config()
    with pytest.raises(RadsteerError, match="--examples must be ≥ 0"):
        resolve("report", _parse("report", ["--examples", "-1"]))


def test_run_dir_commands_read_the_frozen_protocol_relative_to_the_original(tmp_path: Path) -> None:
    from steering.store import write_manifest

    path = _protocol(tmp_path, evaluation={"radgraph_cache": "rg"}, report={"examples": 4})
    run_dir = tmp_path / "runs" / "t"
    run_dir.mkdir(parents=True)
    (run_dir / "protocol.yaml").write_text(path.read_text())
    write_manifest(run_dir, {"protocol_path": str(path.resolve())})
    cfg = resolve_for_run_dir("evaluate", _parse("evaluate", []), run_dir)
    assert cfg.evaluate.radgraph_cache == str((path.parent / "rg").resolve())
    assert resolve_for_run_dir("report", _parse("report", []), run_dir).report.examples == 4
    # a frozen protocol that no longer validates: stats/report go on with a note, evaluate stops
    (run_dir / "protocol.yaml").write_text("name: t\n")
    cfg = resolve_for_run_dir("report", _parse("report", []), run_dir)
    assert cfg.report.examples == 12 and "was not applied" in cfg.deviations()[0]
    with pytest.raises(RadsteerError, match="protocol.yaml"):
        resolve_for_run_dir("evaluate", _parse("evaluate", []), run_dir)


def test_runner_imports_no_command_module_and_commands_share_one_wiring() -> None:
    tree = ast.parse((ROOT / "protocols" / "runner.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith("protocols.commands") for m in imported)
    for name in ("sweep", "evaluate", "stats", "report", "run", "label"):
        text = (ROOT / "protocols" / "commands" / f"{name}.py").read_text()
        assert f'add_options(parser, "{name}")' in text, name


def test_bad_flag_values_exit_2_with_one_line(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path), "--examples", "-2"]) == 2
    assert capsys.readouterr().err.strip() == "radsteer report: error: --examples must be ≥ 0, not -2"
    assert main(["stats", str(tmp_path), "--level", "1.5"]) == 2
    assert "--level must lie strictly between 0 and 1" in capsys.readouterr().err
