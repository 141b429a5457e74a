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
