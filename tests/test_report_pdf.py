"""`radsteer report --pdf`: a real PDF (WeasyPrint) of the same report — opens, paginates, carries the
summary numbers as text, fetches nothing, and never replaces a PDF radsteer did not write."""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path

import pytest

from evaluation.report import build_report, headline_table
from evaluation.synthetic import make_synthetic_study
from protocols.cli import main

if os.environ.get("RADSTEER_REQUIRE_PDF") != "1":  # CI (scripts/test.sh) requires them: a failure, not a skip
    pytest.importorskip("weasyprint", reason="WeasyPrint is not installed (pip install 'radsteer[pdf]')")
import pypdf  # noqa: E402  (a test dependency)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("pdf") / "study"
    make_synthetic_study(run_dir, n_cases=12, n_features=4, alphas=(-5.0, 5.0, 10.0), seed=3)
    return run_dir


def _text(pdf: Path) -> tuple[int, str]:
    reader = pypdf.PdfReader(pdf)
    return len(reader.pages), "\n".join(p.extract_text() for p in reader.pages)


def test_pdf_opens_paginates_and_holds_the_summary_numbers(study: Path, capsys) -> None:
    assert main(["report", str(study), "--pdf", "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    pdf = study / "report.pdf"
    assert f"pdf: {pdf}" in out
    assert pdf.read_bytes()[:5] == b"%PDF-"
    pages, text = _text(pdf)
    assert 6 <= pages <= 40, pages
    flat = " ".join(text.split())
    assert flat.startswith("Steering study report — study")
    # every headline number, as the HTML summary shows it, is text in the PDF
    from evaluation.report import ReportContext
    from evaluation.stats import compute_statistics
    from evaluation.study_data import load_study

    data = load_study(study)
    ctx = ReportContext(data, compute_statistics(data, n_boot=200), "study")
    for row in headline_table(ctx).itertuples():
        assert " ".join(row.value.split()) in flat, row.value
    assert "rows planned / stored" in flat and "156 / 156" in flat  # 12 × (1 + 4 features × 3 α)
    for heading in ("Outcomes per feature and direction", "Reporting checklist", "Dose–response over |α|"):
        assert heading in flat


def test_pdf_replaces_its_own_file_but_never_a_users(study: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "mine.pdf"
    theirs.write_bytes(b"%PDF-1.4 someone else's paper")
    with pytest.raises(Exception, match="not a radsteer report PDF"):
        build_report(study, tmp_path / "mine.html", n_boot=50, pdf=True)
    assert theirs.read_bytes() == b"%PDF-1.4 someone else's paper" and not (tmp_path / "mine.html").exists()
    res = build_report(study, tmp_path / "ours.html", n_boot=50, pdf=True)
    first = res.pdf_path.stat().st_mtime_ns
    res = build_report(study, tmp_path / "ours.html", n_boot=50, pdf=True)  # its own: replaced
    assert res.pdf_path.stat().st_mtime_ns >= first and res.pdf_path.read_bytes()[:5] == b"%PDF-"


def test_printing_fetches_nothing(tmp_path: Path) -> None:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        from evaluation.report_pdf import write_pdf

        html = (f'<html><head><link rel="stylesheet" href="{url}/x.css"></head><body><p>hello</p>'
                f'<img src="{url}/x.png"><img src="file:///etc/hostname"><svg><image href="{url}/y.png"/></svg>'
                f'<p style="background:url({url}/z.png)">x</p></body></html>')
        pdf = write_pdf(html, tmp_path / "x.pdf")
    finally:
        srv.shutdown()
    assert pdf.read_bytes()[:5] == b"%PDF-" and hits == []


def test_pdf_without_weasyprint_is_one_line_and_writes_nothing(study: Path, tmp_path: Path, capsys,
                                                               monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_weasyprint(name, *args, **kwargs):
        if name == "weasyprint":
            raise ImportError("No module named 'weasyprint'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_weasyprint)
    out = tmp_path / "r.html"
    assert main(["report", str(study), "-o", str(out), "--pdf", "--bootstrap", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("radsteer report: error: --pdf needs WeasyPrint") and "\n" not in err
    assert list(tmp_path.iterdir()) == []
