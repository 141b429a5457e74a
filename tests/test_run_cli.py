"""`radsteer run`: sweep → evaluate → stats → report; `--dry-run` figures equal what the run does.

The judge is a real HTTP server on 127.0.0.1 speaking the OpenAI protocol (tests/helpers_judge.py),
so the judge calls counted are requests that arrived at a socket.
"""

from __future__ import annotations

import re

import pytest

from protocols.cli import main
from steering.store import StudyStore
from tests.helpers_judge import FakeOpenAIServer
from tests.helpers_steering import lexicon_and_judge, write_tiny_study


def _numbers(out: str) -> dict[str, int]:
    """The three figures both the dry run and the run print."""
    found = {}
    for key, pattern in (("rows", r"rows: (\d+) (?:to generate|generated)"),
                         ("tokens", r"generated tokens: (?:at most )?(\d+)"),
                         ("judge", r"judge calls: (?:at most )?(\d+)")):
        m = re.search(pattern, out)
        assert m, (key, out)
        found[key] = int(m.group(1))
    return found


def _protocol(tmp_path, base_url: str):
    # 4 cases: evaluation.rates.wilson_interval(0, 3) returns a lower bound of 5.6e-17 > 0, on which
    # evaluation/plots.py's forest plot raises (reported); n = 2 and 4 avoid that unrelated bug
    return write_tiny_study(tmp_path, n_cases=4, alphas=(-4.0, 4.0), max_new_tokens=6,
                            sections={"evaluation": lexicon_and_judge(base_url)})


def _run(capsys, *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def _stored_tokens(run_dir) -> int:
    with StudyStore.open(run_dir) as store:
        return sum(int(g["n_tokens"]) for g in store.rows("generations"))


def test_dry_run_figures_equal_what_the_run_then_does(tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    with FakeOpenAIServer() as srv:
        protocol = str(_protocol(tmp_path, srv.base_url))
        common = [protocol, "--runs-dir", str(runs), "--no-progress"]

        # 1. a first run over 2 of the 3 cases
        dry = _numbers(_run(capsys, "run", *common, "--dry-run", "--limit", "2"))
        assert not runs.exists() and srv.requests == 0  # a dry run writes and asks nothing
        assert dry == {"rows": 2 * (1 + 2 * 2), "tokens": 2 * 5 * 6, "judge": 2 * 2 * 2}
        out = _run(capsys, "run", *common, "--limit", "2")
        real = _numbers(out)
        assert real["rows"] == dry["rows"]
        assert real["tokens"] == _stored_tokens(runs / "tiny") <= dry["tokens"]
        assert real["judge"] == srv.requests == dry["judge"]
        assert (runs / "tiny" / "report.html").exists() and "report: " in out

        # 2. the whole protocol: only the last two cases are left to do
        dry = _numbers(_run(capsys, "run", *common, "--dry-run"))
        assert dry["rows"] == 10 and dry["judge"] == 8
        before_tokens, before_requests = _stored_tokens(runs / "tiny"), srv.requests
        real = _numbers(_run(capsys, "run", *common))
        assert real["rows"] == dry["rows"]
        assert real["tokens"] == _stored_tokens(runs / "tiny") - before_tokens <= dry["tokens"]
        assert real["judge"] == srv.requests - before_requests == dry["judge"]

        # 3. nothing left: the dry run says so, and the run spends nothing
        assert _numbers(_run(capsys, "run", *common, "--dry-run")) == {"rows": 0, "tokens": 0, "judge": 0}
        requests = srv.requests
        assert _numbers(_run(capsys, "run", *common)) == {"rows": 0, "tokens": 0, "judge": 0}
        assert srv.requests == requests
    with StudyStore.open(runs / "tiny") as store:
        assert store.count("generations") == 4 * 5
        verdicts = store.rows("verdicts", method="llm_judge")
        assert len(verdicts) == 4 * 4 and not any(v["error"] for v in verdicts)
        assert {v["method"] for v in store.rows("verdicts")} == {"entity_diff", "llm_judge", "combined"}
    assert (runs / "tiny" / "stats").is_dir()


def test_run_steps_subset_and_a_missing_step_module_is_an_error(tmp_path, capsys, monkeypatch) -> None:
    import builtins

    protocol = write_tiny_study(tmp_path, n_cases=1, max_new_tokens=4)
    runs = str(tmp_path / "runs")
    out = _run(capsys, "run", str(protocol), "--runs-dir", runs, "--steps", "sweep", "--no-progress")
    assert _numbers(out)["rows"] == 5 and not (tmp_path / "runs" / "tiny" / "report.html").exists()

    real_import = builtins.__import__

    def no_report(name, *args, **kwargs):  # as if evaluation/report.py were not installed
        if name == "evaluation.report":
            raise ModuleNotFoundError("No module named 'evaluation.report'", name="evaluation.report")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_report)
    with pytest.raises(ModuleNotFoundError):  # a broken installation is never skipped quietly
        main(["run", str(protocol), "--runs-dir", runs, "--no-progress"])
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert main(["run", str(protocol), "--runs-dir", runs, "--steps", "sweep,publish"]) == 2
    assert "unknown step(s) publish" in capsys.readouterr().err
