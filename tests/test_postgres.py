"""The study on a real PostgreSQL server: a sweep and an evaluation through `--store-url` store
exactly the rows (and text) of the same steps on SQLite; later commands find the server from the
run directory; a bad or unreachable URL is one line, exit 2."""

from __future__ import annotations

import json

import pytest

from protocols.cli import main
from steering.store import STORE_URL_ENV, StudyStore
from tests.helpers_steering import write_tiny_study

pytestmark = pytest.mark.postgres

KEY = ["case_id", "feature_id", "alpha", "settings_hash"]


def _frame(store: StudyStore, table: str, cols: list[str]):
    return store.dataframe(table)[cols].sort_values(cols[:4] if len(cols) > 4 else cols).reset_index(drop=True)


def test_sweep_and_evaluate_on_postgres_equal_sqlite(tmp_path, pg_url, monkeypatch, capsys) -> None:
    monkeypatch.delenv(STORE_URL_ENV, raising=False)  # the CLI sets it for its process; restored after
    protocol = write_tiny_study(tmp_path, n_cases=3)
    lite, pg = tmp_path / "lite", tmp_path / "pg"
    assert main(["sweep", str(protocol), "--runs-dir", str(lite), "--no-progress"]) == 0
    url_with_password = pg_url.replace("postgres@", "postgres:not-a-real-secret@")  # trust auth ignores it
    assert main(["sweep", str(protocol), "--runs-dir", str(pg), "--no-progress", "--store-url",
                 url_with_password]) == 0
    run = pg / "tiny"
    assert {p.name for p in run.iterdir()} >= {"protocol.yaml", "manifest.json", "store.json"}
    assert not (run / "study.sqlite").exists()
    assert json.loads((run / "store.json").read_text())["url"] == pg_url  # no password on disk
    assert "not-a-real-secret" not in "".join(p.read_text() for p in run.iterdir() if p.is_file())

    assert STORE_URL_ENV not in __import__("os").environ  # from here on the run directory alone says where
    assert main(["sweep", str(protocol), "--runs-dir", str(pg), "--no-progress"]) == 0
    assert "0 generated" in capsys.readouterr().out.splitlines()[-2]
    for run_dir in (lite / "tiny", run):
        assert main(["evaluate", str(run_dir), "--no-progress"]) == 0
    with StudyStore.open(lite / "tiny") as a, StudyStore.open(run) as b:
        assert b.engine.dialect.name == "postgresql" and a.engine.dialect.name == "sqlite"
        cols = [*KEY, "text", "n_tokens", "finish_reason"]
        ga, gb = _frame(a, "generations", cols), _frame(b, "generations", cols)
        assert len(gb) == 3 * (1 + 2 * 2) and ga.equals(gb)
        va, vb = (s.generations_with_baselines().merge(s.dataframe("verdicts"), left_on="generation_id",
                                                       right_on="generation_id")
                  [["case_id", "feature_id", "alpha", "method", "label", "on_target", "off_target"]]
                  .sort_values(["case_id", "feature_id", "alpha", "method"]).reset_index(drop=True)
                  for s in (a, b))
        assert len(vb) > 0 and va.equals(vb)
    assert main(["stats", str(run)]) == 0


def test_bad_and_unreachable_store_urls_are_one_line(tmp_path, pg_server, monkeypatch, capsys) -> None:
    monkeypatch.delenv(STORE_URL_ENV, raising=False)
    protocol = write_tiny_study(tmp_path, n_cases=1)
    runs = str(tmp_path / "runs")
    for url, words in ((f"postgresql+psycopg://postgres:pw-SECRET@127.0.0.1:{pg_server.port}/no_such_db",
                        "no_such_db"),
                       ("nosuchdialect://x/y", "nosuchdialect"),
                       ("postgresql+psycopg://postgres:pw-SECRET@127.0.0.1:1/db", "cannot open")):
        assert main(["sweep", str(protocol), "--runs-dir", runs, "--no-progress", "--store-url", url]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and words in err and "SECRET" not in err, err
