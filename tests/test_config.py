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


# ---- one flag, one meaning: every command's parser, compared ---------------------------------

# Flag names that mean a different thing in each command that shows them (so their help and default
# may differ). Every other flag shown by several commands must be the same flag everywhere: same help,
# default, choices and type — which `add_options` guarantees for a flag defined once in SETTINGS.
PER_COMMAND_FLAGS = {
    "--batch-size": "the unit differs: reports per extraction batch (evaluate stores each batch, label writes "
                    "once at the end), reports per forward pass (mine, activations), sentences (vectors), "
                    "training sequences (sae)",
    "--seed": "what is seeded differs: the bootstrap (stats, report, run), the annotation queues (annotate), "
              "the shown/held-out split (interpret), the SAE's initialisation (sae)",
    "--out": "the output differs: the statistics tables (stats), the demo's folder (demo), the SAE (sae)",
    "--output": "the output differs: labelled pairs (label), the HTML report (report)",
    "-o": "short for --output",
    "--force": "what is redone differs: vectors (vectors), interpretations (interpret), a foreign SAE (sae)",
    "--dry-run": "each command's own plan: rows/tokens/judge calls (run), features/requests (interpret)",
    "--json": "each command's own output: the steered reports (generate), the concepts (concepts)",
    "--features": "'all' is every feature of the bank (mine) or every mined feature (interpret)",
    "--layer": "the layer steered, optional (generate), or the layer an SAE is trained on, required (sae)",
    "--model-kind": "sae trains on text models only (no maira2)",
    "--dtype": "sae reads activations for training in float32; generate follows the model ('auto')",
}

# A command's own flag that shares a protocol field's name but not its meaning (or its default), and why.
NOT_THE_PROTOCOL_FIELD = {
    ("--max-new-tokens", "generation.max_new_tokens"): "generate has no protocol: the model adapter's own "
                                                      "default (300 for MAIRA-2)",
    ("--batch-size", "generation.batch_size"): "rows per generate call (sweep) vs reports per reading pass",
    ("--dtype", "model.dtype"): "sae trains in float32",
    ("--explainer", "features.select.explainer"): "select filters rows by explainer (none: any); interpret "
                                                  "chooses the explainer",
}


def _command_parsers() -> dict[str, argparse.ArgumentParser]:
    import importlib

    from protocols.cli import COMMANDS, build_parser

    _, subparsers = build_parser()
    for name in COMMANDS:
        importlib.import_module(f"protocols.commands.{name}").add_arguments(subparsers[name])
    return subparsers


def _signature(action: argparse.Action) -> str:
    return repr((action.default, action.help, action.choices, getattr(action.type, "__name__", action.type),
                 action.required, action.const, type(action).__name__))


def test_a_flag_shown_by_several_commands_is_one_flag() -> None:
    seen: dict[str, dict[str, str]] = {}
    for name, parser in _command_parsers().items():
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    seen.setdefault(flag, {})[name] = _signature(action)
    differing = {flag: sorted(by) for flag, by in seen.items() if len(set(by.values())) > 1}
    unexplained = {f: c for f, c in differing.items() if f not in PER_COMMAND_FLAGS}
    assert not unexplained, f"same flag, different help/default in these commands: {unexplained}"
    stale = sorted(set(PER_COMMAND_FLAGS) - set(differing))
    assert not stale, f"PER_COMMAND_FLAGS lists flags that now mean one thing everywhere: {stale}"
    # the shared ones really are shared: one definition each
    for flag, commands in (("--runs-dir", {"sweep", "run", "mine", "interpret", "validate"}),
                           ("--no-progress", {"sweep", "evaluate", "run", "demo", "mine", "interpret",
                                              "activations", "sae"}),
                           ("--threads", {"demo", "sae"}), ("--limit", {"sweep", "run", "demo"})):
        assert set(seen[flag]) == commands, flag


def test_every_command_that_opens_a_study_takes_store_url() -> None:
    parsers = _command_parsers()
    # issue 16; `label` reads and writes JSONL files and opens no study
    for name in ("annotate", "activations", "interpret", "mine", "report", "stats", "evaluate", "sweep", "run",
                 "demo"):
        assert "--store-url" in parsers[name]._option_string_actions, name
    assert "--store-url" not in parsers["label"]._option_string_actions


def test_every_command_with_settings_adds_them_through_add_options() -> None:
    commands = {c for s in SETTINGS for c in s.commands}
    for name in commands:
        text = (ROOT / "protocols" / "commands" / f"{name}.py").read_text()
        assert f'add_options(parser, "{name}")' in text, name
    for name in _command_parsers():  # and none defines a SETTINGS flag by hand
        text = (ROOT / "protocols" / "commands" / f"{name}.py").read_text()
        for s in SETTINGS:
            for flag in (*s.flags, *s.negative):
                if name in s.commands:
                    assert f'add_argument("{flag}"' not in text, (name, flag)


def _schema_leaves(model=Protocol, path: tuple[str, ...] = ()):
    import typing

    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        ann = field.annotation
        nested = [a for a in (typing.get_args(ann) or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested:
            yield from _schema_leaves(nested[0], (*path, name))
        elif not field.is_required():
            yield (*path, name), field.get_default(call_default_factory=True)


def test_a_command_flag_named_like_a_protocol_field_has_the_schemas_default() -> None:
    aliases = {"sae_format": "format", "normalisation_factor": "normalisation_factor"}
    leaves = list(_schema_leaves())
    assert (("annotation", "blinded"), True) in leaves  # the walk reaches nested sections
    found = set()
    for name, parser in _command_parsers().items():
        for action in parser._actions:
            if not action.option_strings or action.dest in ("help",) or action.dest.startswith("cfg__"):
                continue  # SETTINGS flags: test_every_protocol_backed_setting_has_the_schemas_default
            field = aliases.get(action.dest, action.dest)
            for path, schema_default in leaves:
                if path[-1] == field and schema_default != action.default:
                    key = (action.option_strings[-1], ".".join(path))
                    found.add(key)
                    assert key in NOT_THE_PROTOCOL_FIELD, f"radsteer {name} {key[0]} defaults to {action.default!r}, " \
                                                          f"the protocol's {key[1]} to {schema_default!r}"
    assert found == set(NOT_THE_PROTOCOL_FIELD), set(NOT_THE_PROTOCOL_FIELD) - found


def test_yes_no_settings_take_either_flag_never_both(capsys) -> None:
    cfg = resolve("annotate", _parse("annotate", ["--show-automated", "--no-disagreements-first"]))
    assert cfg.annotate.blinded is False and cfg.annotate.disagreements_first is False
    assert cfg.explain(["annotate.blinded"]) == "blinded=False (--show-automated)"
    cfg = resolve("annotate", _parse("annotate", []))
    assert cfg.annotate.blinded is True and cfg.sources["annotate.blinded"] == "default"
    with pytest.raises(SystemExit) as exc:
        _parse("annotate", ["--blinded", "--show-automated"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(RadsteerError, match="--overlap must lie between 0 and 1, not 1.5"):
        resolve("annotate", _parse("annotate", ["--overlap", "1.5"]))
    # a default of 0 is shown (0 is not "no default")
    p = argparse.ArgumentParser()
    add_options(p, "stats")
    assert p._option_string_actions["--seed"].help == "bootstrap seed (default: 0)"


def _printed(out: str) -> dict[str, str]:
    """--print-config's lines as {setting: "value  (source)"}."""
    return {k.strip(): v.strip() for k, v in (line.split(" = ", 1) for line in out.splitlines() if " = " in line)}


def test_print_config_says_where_every_value_came_from(tmp_path: Path, capsys) -> None:
    path = _protocol(tmp_path, report={"examples": 3}, annotation={"blinded": False})
    assert main(["run", str(path), "--print-config", "--examples", "5", "--no-judge"]) == 0
    out = capsys.readouterr().out
    lines = _printed(out)
    assert lines["report.examples"] == "5  (--examples)" and lines["judge.off"] == "True  (--no-judge)"
    assert lines["stats.correction"] == "'holm'  (default)"  # the file does not say it
    assert lines["evaluate.extractor"].endswith("(default)") and "ui.threads" not in lines  # run has no --threads
    assert "note: report.examples: 5 from --examples instead of the protocol's 3" in out
    assert not (tmp_path / "runs").exists() and not (Path.cwd() / "runs" / "t").exists()  # nothing run
    # a run directory: its frozen protocol
    run_dir = tmp_path / "runs" / "t"
    run_dir.mkdir(parents=True)
    (run_dir / "protocol.yaml").write_text(path.read_text())
    assert main(["annotate", str(run_dir), "--print-config", "--seed", "4"]) == 0
    lines = _printed(capsys.readouterr().out)
    assert lines["annotate.blinded"] == "False  (protocol)" and lines["annotate.seed"] == "4  (--seed)"
    assert lines["annotate.disagreements_first"] == "True  (default)"
    assert main(["report", str(run_dir), "--print-config"]) == 0
    assert _printed(capsys.readouterr().out)["report.examples"] == "3  (protocol)"
    (run_dir / "protocol.yaml").write_text(path.read_text().replace("blinded: false", "blinded: maybe"))
    assert main(["annotate", str(run_dir), "--print-config"]) == 2
    assert "annotation.blinded" in capsys.readouterr().err
    (run_dir / "protocol.yaml").unlink()
    assert main(["annotate", str(run_dir), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert _printed(out)["annotate.blinded"] == "True  (default)" and "has no protocol.yaml" in out


def test_the_demo_passes_its_flags_to_the_steering_study(tmp_path: Path) -> None:
    """`radsteer demo --limit N --no-progress` reaches the study's config the way `run` would."""
    args = _parse("demo", ["--limit", "2", "--no-progress", "--threads", "1"])
    cfg = resolve("demo", args, flags={"study.runs_dir": str(tmp_path)})
    assert (cfg.study.limit, cfg.ui.no_progress, cfg.ui.threads, cfg.study.runs_dir) == (2, True, 1, str(tmp_path))
    assert cfg.sources["study.runs_dir"] == "flag" and cfg.report.examples == 12  # and every step's settings
    with pytest.raises(RadsteerError, match="--threads must be ≥ 1, not 0"):
        resolve("sae", _parse("sae", ["--threads", "0"]))
