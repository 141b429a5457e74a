"""The extractor registry (evaluation/extractors.py): built-ins, duplicates, and third-party
extractors found through the `radsteer.extractors` entry-point group of a real installed
distribution (a dist-info folder on sys.path, read by importlib.metadata)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import extractors

ROOT = Path(__file__).resolve().parents[1]


def test_the_registry_module_imports_nothing_of_radsteer() -> None:
    tree = ast.parse((ROOT / "evaluation" / "extractors.py").read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"evaluation", "steering", "protocols", "annotation_ui"}, imported


def test_builtins_are_listed_without_importing_them() -> None:
    code = ("import sys; from evaluation import extractors; n = extractors.names(); "
            "assert n[:3] == ['lexicon', 'radgraph', 'radgraph-xl'], n; "
            "assert 'evaluation.radgraph_backend' not in sys.modules and 'torch' not in sys.modules; "
            "assert 'evaluation.lexicon' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_pyproject_declares_the_builtins_in_the_entry_point_group() -> None:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert data["project"]["entry-points"][extractors.GROUP] == extractors.BUILTIN


def test_duplicates_raise_and_the_same_target_is_a_no_op(monkeypatch) -> None:
    monkeypatch.setattr(extractors, "_registry", dict(extractors._registry))
    monkeypatch.setattr(extractors, "_origin", dict(extractors._origin))
    extractors.register("lexicon", extractors.BUILTIN["lexicon"], origin="again")  # same target: fine
    with pytest.raises(extractors.DuplicateExtractorError, match="'lexicon' is registered twice: "
                       "evaluation.lexicon:LexiconExtractor \\(built-in\\) and x.y:Z \\(test\\)"):
        extractors.register("lexicon", "x.y:Z", origin="test")
    with pytest.raises(ValueError, match="non-empty string"):
        extractors.register(" padded ", "x:y")
    extractors.register("toy", lambda **kw: kw)
    assert extractors.get_extractor("toy", a=1) == {"a": 1}
    with pytest.raises(extractors.UnknownExtractorError, match="unknown entity extractor 'nope'; choose one of "
                       "lexicon, radgraph, radgraph-xl"):
        extractors.factory("nope")


def _install_plugin(tmp_path: Path, name: str, value: str) -> Path:
    """A real (minimal) installed distribution declaring one extractor entry point."""
    site = tmp_path / "site"
    info = site / "toy_extractor-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-extractor\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[radsteer.extractors]\n{name} = {value}\n")
    (site / "toy_extractor.py").write_text(
        "from evaluation.entities import Entity\n"
        "class Shouty:\n"
        "    name = 'shouty'\n"
        "    def __init__(self, **options):\n"
        "        self.options = options\n"
        "    def extract(self, texts):\n"
        "        return [[Entity(w.lower(), 'observation', 'present') for w in t.split() if w.isupper()]\n"
        "                for t in texts]\n")
    return site


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "OMP_NUM_THREADS": "1"}


def test_a_third_party_extractor_is_found_and_labels_through_the_cli(tmp_path: Path) -> None:
    site = _install_plugin(tmp_path, "shouty", "toy_extractor:Shouty")
    code = ("from evaluation import extractors; print(extractors.names()); "
            "x = extractors.get_extractor('shouty'); print([e.text for e in x.extract(['a WIDGET here'])[0]])")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=_env(site))
    assert out.stdout.splitlines() == ["['lexicon', 'radgraph', 'radgraph-xl', 'shouty']", "['widget']"]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "p1", "baseline": "No effusion.", "steered": "Effusion. GADGET",
                                 "target": "effusion", "direction": 1}) + "\n")
    result = subprocess.run([sys.executable, "-m", "protocols.cli", "label", str(pairs), "-o", str(tmp_path / "o.jsonl"),
                             "--extractor", "shouty", "--quiet"], capture_output=True, text=True, env=_env(site))
    assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert row["evidence"]["extractor"] == "shouty" and row["label"] == "off"  # only "gadget" was added


def test_a_plugin_reusing_a_builtin_name_is_refused(tmp_path: Path) -> None:
    site = _install_plugin(tmp_path, "lexicon", "toy_extractor:Shouty")
    code = "from evaluation import extractors; extractors.names()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(site))
    assert out.returncode != 0
    assert ("DuplicateExtractorError: entity extractor 'lexicon' is registered twice: "
            "evaluation.lexicon:LexiconExtractor (built-in) and toy_extractor:Shouty "
            "(entry point of toy-extractor)") in out.stderr


def test_the_protocol_schema_takes_its_extractor_names_from_the_registry() -> None:
    from pydantic import ValidationError

    from protocols.schema import EvaluationOptions

    assert EvaluationOptions(extractor="radgraph-xl").extractor == "radgraph-xl"
    with pytest.raises(ValidationError, match="unknown entity extractor 'radgraf'; choose one of lexicon, "
                       "radgraph, radgraph-xl"):
        EvaluationOptions(extractor="radgraf")


def test_a_broken_plugin_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    site = _install_plugin(tmp_path, "broken", "no_such_module_xyz:Thing")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "p1", "baseline": "No effusion.", "steered": "Effusion.",
                                 "target": "effusion", "direction": 1}) + "\n")
    result = subprocess.run([sys.executable, "-m", "protocols.cli", "label", str(pairs), "-o", str(tmp_path / "o.jsonl"),
                             "--extractor", "broken", "--quiet"], capture_output=True, text=True, env=_env(site))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == (
        "radsteer label: error: entity extractor 'broken' (no_such_module_xyz:Thing, entry point of toy-extractor) "
        "cannot be loaded: ModuleNotFoundError: No module named 'no_such_module_xyz'")
    assert not (tmp_path / "o.jsonl").exists()
    # a duplicate among plugins stops every command that lists extractors, in one line too
    dup = _install_plugin(tmp_path / "dup", "lexicon", "toy_extractor:Shouty")
    result = subprocess.run([sys.executable, "-m", "protocols.cli", "label", str(pairs), "-o", str(tmp_path / "o.jsonl")],
                            capture_output=True, text=True, env=_env(dup))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("radsteer label: error: entity extractor 'lexicon' is registered twice")


def test_no_import_cycle_among_the_extraction_modules() -> None:
    """entities, vocabulary, lexicon, radgraph_mapping, radgraph_backend and the registry import
    each other one way only (lazy imports inside functions included)."""
    mods = ["entities", "vocabulary", "lexicon", "radgraph_mapping", "radgraph_backend", "extractors"]
    graph: dict[str, set[str]] = {}
    for m in mods:
        tree = ast.parse((ROOT / "evaluation" / f"{m}.py").read_text(encoding="utf-8"))
        found = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        found |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        graph[m] = {f.split(".")[1] for f in found if f.startswith("evaluation.") and f.split(".")[1] in mods}

    def reaches(a: str, b: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, seen | {n})) for n in graph[a])

    assert not [m for m in mods if reaches(m, m)], graph
    assert graph["extractors"] == set() and graph["entities"] == set()
    assert "lexicon" not in graph["radgraph_mapping"]  # the mapping needs the vocabulary, not the parser
