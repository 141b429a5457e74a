"""Bad inputs refused in one line, exit 2, nothing created (issue 11, "Protocols and inputs")."""

from __future__ import annotations

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
