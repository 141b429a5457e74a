"""The HTML study report in a real headless Chromium: renders, loads nothing, escapes model text."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.report import build_report
from evaluation.synthetic import make_synthetic_study

CHROMIUM = Path("/usr/bin/chromium")
PAYLOAD = "<script>window.__pwned=1</script>"
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_importing_stats_and_report_loads_no_torch() -> None:
    code = ("import sys, evaluation.stats, evaluation.report, evaluation.plots; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("browser") / "study"
    # small enough that every steered generation is shown as an example, the injected one included
    make_synthetic_study(run_dir, n_cases=4, n_features=3, alphas=(-5.0, 5.0, 10.0), injected_text=PAYLOAD, seed=7)
    res = build_report(run_dir, run_dir / "report.html", n_examples=100, n_boot=200)
    return res.html_path


def test_report_source_escapes_model_text(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    assert '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'' in text
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in text
    # the only URLs are SVG's XML namespace names, which are identifiers and never fetched
    rest = text.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        'xmlns:xlink="http://www.w3.org/1999/xlink"', "")
    assert "http://" not in rest and "https://" not in rest and "//" + "cdn" not in rest


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
def test_report_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    url = report.resolve().as_uri()
    requests: list[str] = []
    console_errors: list[str] = []
    page_errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            # bypass_csp: the report's own Content-Security-Policy would also stop an injected script;
            # switching it off here makes "never run" below a test of the escaping alone
            context = browser.new_context(viewport={"width": 1200, "height": 900}, bypass_csp=True,
                                          accept_downloads=True)
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(url, wait_until="load")
            page.wait_for_timeout(300)
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=False)
            body = page.inner_text("body")
            pwned = page.evaluate("typeof window.__pwned")
            n_svg = page.locator("svg.rs-fig").count()
            boxes = [page.locator("svg.rs-fig").nth(i).bounding_box() for i in range(n_svg)]
            headings = page.locator("h2").all_inner_texts()
            first_table = page.locator("section#summary table").first.inner_text()
            # every table downloads as CSV from its data URI, with no request
            with page.expect_download() as dl:
                page.locator("section#summary a.dl").click()
            download = dl.value
            csv_name, csv_text = download.suggested_filename, Path(download.path()).read_text(encoding="utf-8")
            n_links = page.locator("a.dl").count()
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    docs_shot = ROOT / "docs" / "report_screenshot.png"
    if not docs_shot.exists():
        shutil.copyfile(shot, docs_shot)
    assert console_errors == [] and page_errors == []
    assert requests == [url], f"the report made requests beyond itself: {requests}"
    assert PAYLOAD in body  # shown as text ...
    assert pwned == "undefined"  # ... and never run
    assert n_svg == 4  # stacked bars, positive vs negative, forest plot, dose–response (|α| ∈ {5, 10})
    for box in boxes:  # drawn, with a real size, inside the page's width
        assert box is not None and box["width"] > 200 and box["height"] > 150 and box["x"] + box["width"] <= 1200
    # the summary table comes first, then the stacked bars
    assert headings[0] == "Summary" and headings[1] == "Outcomes per feature and direction"
    assert "rows planned / stored\t40 / 40" in first_table and "on-target rate, +α" in first_table
    assert csv_name == "summary.csv" and csv_text.startswith("measure,value,estimate,ci_low,ci_high,n")
    assert "rows planned / stored,40 / 40,40" in csv_text
    assert n_links >= 8
    for h in ("Flow of cases and rows", "Agreement", "Example baseline / steered pairs", "Manifest",
              "Reporting checklist", "Dose–response over |α|"):
        assert any(x.startswith(h) for x in headings), (h, headings)
