"""Dependencies point one way (docs/design.md): protocols → {steering, evaluation, annotation_ui},
annotation_ui → evaluation, all → steering.store; evaluation loads no torch at import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "steering": {"evaluation", "annotation_ui", "protocols", "gradio"},
    "evaluation": {"annotation_ui", "protocols", "gradio"},
    "annotation_ui": {"protocols"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        hit = _imports(path) & FORBIDDEN[package]
        if hit:
            bad.append(f"{path.relative_to(ROOT)} imports {', '.join(sorted(hit))}")
    assert not bad, "\n".join(bad)


def test_statistics_and_reports_load_without_torch() -> None:
    code = (
        "import sys\n"
        "import steering.store, evaluation.entities, evaluation.textdiff\n"
        "import importlib\n"
        "for m in ('evaluation.stats', 'evaluation.report', 'evaluation.lexicon', 'evaluation.diff',"
        " 'evaluation.targets', 'evaluation.judge'):\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ModuleNotFoundError as e:\n"
        "        if e.name != m: raise\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_design_citations_point_into_the_repository() -> None:
    """Code cites docs/design.md (in the repo), by a section heading that exists there."""
    import re

    design = ROOT / "docs" / "design.md"
    assert design.is_file(), "docs/design.md is missing"
    headings = {re.sub(r"^#+\s*(\d+\.\s*)?", "", line).strip().lower()
                for line in design.read_text().splitlines() if line.startswith("#")}
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        if any(part in (".git", ".venv", "venv", "build") for part in path.parts):
            continue
        text = path.read_text(errors="replace")
        if re.search(r"(?<![\w/])DESIGN\.md", text):
            bad.append(f"{path.relative_to(ROOT)} cites the design notes outside the repository (use docs/design.md)")
        for section in re.findall(r'docs/design\.md,\s+"([^"]+)"', text):
            section = " ".join(section.replace("#", " ").split())  # wrapped across comment lines
            if section.lower() not in headings:
                bad.append(f"{path.relative_to(ROOT)} cites a missing section {section!r} of docs/design.md")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module, name", [
    ("annotation_ui.persistence", "answers_of"), ("steering.maira2.cases", "store_inputs"),
    ("steering.maira2.cases", "read_cases"), ("evaluation.agreement", "kappa_p_value"),
    ("protocols.runner", "_missing_part"),
])
def test_dead_code_stays_removed(module: str, name: str) -> None:
    """Unused duplicates drift from the code that runs (issue 11): one cases reader, no skipped steps."""
    import importlib

    assert not hasattr(importlib.import_module(module), name)
    from protocols.study import Study

    assert "_cache" not in Study.__dataclass_fields__


STORE_INTERNALS = ("sqlalchemy", "psycopg", "psycopg2", "sqlite3", "steering.store.schema", "steering.store.db",
                   "steering.store.versioning", "steering.store.migrations")
"""What only `steering.store` may import: the database layer and the store's tables (issue 16)."""
_SQL = __import__("re").compile(r"\b(SELECT\b.+\bFROM|INSERT\s+INTO|UPDATE\b.+\bSET|DELETE\s+FROM|CREATE\s+TABLE)\b",
                                __import__("re").S)
GENERIC = {"rows", "upsert", "insert_ignore", "dataframe", "count"}
"""The store's table-name methods: the annotation app uses typed repository methods only."""


def _store_misuse(path: Path, *, typed_only: bool) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        mods: list[str] = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if node.module == "steering.store" and any(a.name == "TABLES" for a in node.names):
                bad.append(f"line {node.lineno}: imports the store's TABLES")
        bad += [f"line {node.lineno}: imports {m}" for m in mods
                if any(m == x or m.startswith(x + ".") for x in STORE_INTERNALS)]
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Attribute) and node.value.attr == "engine" and node.attr in (
                    "connect", "begin", "dialect", "raw_connection", "execute", "url"):
                bad.append(f"line {node.lineno}: reaches the store's engine (.engine.{node.attr})")
            if node.attr == "transaction":
                bad.append(f"line {node.lineno}: opens a store transaction")
            if typed_only and node.attr in GENERIC and isinstance(node.value, ast.Name | ast.Attribute) and (
                    "store" in ast.unparse(node.value)):
                bad.append(f"line {node.lineno}: table-name method {ast.unparse(node)} (use a typed store method)")
        if isinstance(node, ast.keyword) and node.arg == "conn":
            bad.append(f"line {node.lineno}: passes a connection (conn=)")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL.search(node.value):
            bad.append(f"line {node.lineno}: SQL text {node.value[:40]!r}")
    return bad


@pytest.mark.parametrize("package", ["annotation_ui", "evaluation", "protocols"])
def test_the_store_is_the_only_way_in(package: str) -> None:
    """No module outside `steering.store` imports the database layer or the store's tables, opens a
    transaction, passes a connection or holds SQL text; the annotation app also names no table
    (typed repository methods only)."""
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad += [f"{path.relative_to(ROOT)} {b}" for b in _store_misuse(path, typed_only=package == "annotation_ui")]
    assert not bad, "\n".join(bad)


def test_the_store_check_catches_misuse(tmp_path) -> None:
    """The check above fails on each kind of misuse (so it cannot pass by not looking)."""
    samples = {
        "from sqlalchemy import select": "imports sqlalchemy",
        "from steering.store.schema import annotations": "imports steering.store.schema",
        "from steering.store import TABLES": "TABLES",
        "with store.engine.connect() as c: pass": ".engine.connect",
        "with store.transaction() as c: pass": "transaction",
        "store.upsert('annotations', [], key=[], conn=c)": "conn=",
        "store.rows('annotations')": "table-name method",
        "q = 'SELECT id FROM annotations'": "SQL text",
    }
    for code, why in samples.items():
        p = tmp_path / "m.py"
        p.write_text(code + "\n")
        found = _store_misuse(p, typed_only=True)
        assert any(why in f for f in found), (code, found)
    p.write_text("study.engine(adapter, bank)\nstore.queue_status('a', 'change')\nx = 'select a reader'\n")
    assert _store_misuse(p, typed_only=True) == []
