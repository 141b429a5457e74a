"""One path from protocol to report: `radsteer run` and the single commands do exactly the same.

The same tiny study (real tiny Llama, real SAE file, the lexicon extractor and a real HTTP judge
server speaking the OpenAI protocol) is run twice — once as `radsteer run`, once as `sweep`,
`evaluate`, `stats`, `report` — into two run directories; every output file must be identical byte
for byte, timestamps aside (the report's creation time and the manifest's `created_at`), and the
store must hold the same rows. Also: the report says rows planned = rows stored.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import yaml

from protocols.cli import main
from steering.store import StudyStore
from tests.helpers_judge import FakeOpenAIServer
from tests.helpers_steering import write_tiny_study

_TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:\+00:00|Z)?")
_URI = re.compile(rb"data:text/csv;charset=utf-8;base64,([A-Za-z0-9+/=]+)")
_STORE_TIME_COLUMNS = {"created_at", "updated_at", "seconds"}


def _normalise(data: bytes) -> bytes:
    """Timestamps masked, also inside the CSV data URIs (the manifest table carries created_at)."""
    data = _URI.sub(lambda m: b"data:csv," + _TIME.sub(b"<time>", base64.b64decode(m.group(1))), data)
    return _TIME.sub(b"<time>", data)


def _outputs(run_dir: Path) -> dict[str, bytes]:
    skip = {"study.sqlite", "study.sqlite-wal", "study.sqlite-shm"}
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in skip}


def _store_rows(run_dir: Path) -> dict[str, list]:
    out = {}
    with StudyStore.open(run_dir) as store:
        for table in ("cases", "features", "generations", "extractions", "verdicts", "judge_cache"):
            df = store.dataframe(table)
            df = df.drop(columns=[c for c in df.columns if c in _STORE_TIME_COLUMNS])
            if table == "verdicts":  # its surrogate id follows the judge's (concurrent) completion order
                df = df.drop(columns=["id"])
            out[table] = sorted(map(repr, df.to_dict("records")))
    return out


def test_run_and_single_commands_write_identical_outputs(tmp_path: Path, capsys) -> None:
    protocol = write_tiny_study(tmp_path, n_cases=4, alphas=(-4.0, 4.0), max_new_tokens=6)
    with FakeOpenAIServer() as srv:
        data = yaml.safe_load(protocol.read_text())
        data["evaluation"] = {"extractor": "lexicon",
                              "judge": {"model": "fake-judge", "base_url": srv.base_url, "api_key_env": None}}
        data["report"] = {"examples": 5, "multiplicity": "fdr_bh"}  # protocol values both ways must honour
        protocol.write_text(yaml.safe_dump(data, sort_keys=False))
        a, b = tmp_path / "a", tmp_path / "b"
        assert main(["run", str(protocol), "--runs-dir", str(a), "--no-progress", "--pdf"]) == 0
        run_a = a / "tiny"
        assert main(["sweep", str(protocol), "--runs-dir", str(b), "--no-progress"]) == 0
        run_b = b / "tiny"
        assert main(["evaluate", str(run_b), "--no-progress"]) == 0
        assert main(["stats", str(run_b)]) == 0
        assert main(["report", str(run_b), "--pdf"]) == 0
    capsys.readouterr()

    files_a, files_b = _outputs(run_a), _outputs(run_b)
    assert sorted(files_a) == sorted(files_b)
    assert {"report.html", "report.pdf", "manifest.json", "protocol.yaml", "stats/rates_by_cell.csv",
            "stats/rates_by_cell.parquet", "report_tables/per_feature.csv"} <= set(files_a)
    for name in files_a:
        if name.endswith(".pdf"):
            continue  # the PDF embeds its creation time in its own encodings; compared below by its text
        assert _normalise(files_a[name]) == _normalise(files_b[name]), name
    rows_a, rows_b = _store_rows(run_a), _store_rows(run_b)
    for table in rows_a:
        assert rows_a[table] == rows_b[table], (table, set(rows_a[table]) ^ set(rows_b[table]))

    html = files_a["report.html"].decode()
    # the protocol's settings, not the commands' old defaults: 5 examples, BH correction
    assert html.count("<h3>case") == 5 and "Benjamini" in html
    # rows planned = rows stored, in the summary table
    stored = 4 * (1 + 2 * 2)
    assert f"<td>rows planned / stored</td>\n      <td>{stored} / {stored}</td>" in html

    import pypdf

    texts = [" ".join(p.extract_text() for p in pypdf.PdfReader(run / "report.pdf").pages) for run in (run_a, run_b)]
    assert _normalise(texts[0].encode()) == _normalise(texts[1].encode())
