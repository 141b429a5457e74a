"""Grounded reports in the reader's browser (Playwright + Debian chromium): the baseline's and the
steered report's boxes are drawn over the frontal image in two colours, where MAIRA-2 put them
(normalised to the centre square it crops the image to), stay on the image under zoom and pan,
render hostile sentences as text, drop malformed boxes; an ungrounded item looks as before."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation_ui.views import drawable_boxes, grounding_html
from steering.store import BASELINE_FEATURE, StudyStore
from tests import test_annotation_browser
from tests.helpers_annotation import Server
from tests.test_annotation_browser import CHROMIUM

browser = test_annotation_browser.browser  # the same module-scoped headless Chromium fixture
pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian chromium not installed at {CHROMIUM}"),
    pytest.mark.timeout(180),
]

HOSTILE = '<script>window.__pwned = 1</script> & "quoted" <img src=x onerror="window.__pwned = 2">'
BASELINE = [{"text": "Left lower opacity", "boxes": [[0.1, 0.2, 0.4, 0.9]]},
            {"text": "No pneumothorax.", "boxes": []}]
STEERED = [
    {"text": "Left lower opacity", "boxes": [[0.1, 0.55, 0.4, 0.9]]},
    {"text": HOSTILE, "boxes": [[0.6, 0.1, 0.9, 0.3], [0.7, 0.6, 0.6, 0.5]]},  # second: corners reversed
    {"text": "No pneumothorax.", "boxes": []},
    {"text": "malformed", "boxes": [[1.5, 1.5, 2.0, 2.0], ["x", 0, 1, 1], [0.2, 0.2, 0.3], [True, 0, 1, 1],
                                     [0.95, 0.9, 1.4, 1.2], "box", None]},  # only the 4th-last is drawn
]
# what must be drawn, per side, in normalised (x0, y0, x1, y1)
EXPECTED = {
    "baseline": [(0.1, 0.2, 0.4, 0.9)],
    "steered": [(0.1, 0.55, 0.4, 0.9), (0.6, 0.1, 0.9, 0.3), (0.6, 0.5, 0.7, 0.6), (0.95, 0.9, 1.0, 1.0)],
}


def test_malformed_boxes_are_dropped_or_clamped() -> None:
    assert drawable_boxes(STEERED[3]["boxes"]) == [(0.95, 0.9, 1.0, 1.0)]
    assert drawable_boxes("nope") == [] and drawable_boxes([[float("nan"), 0, 1, 1]]) == []
    assert grounding_html(None) == ("", "") and grounding_html({"steered": [{"text": "x", "boxes": []}]}) == ("", "")
    assert grounding_html({"steered": "junk", "baseline": [None, 3, {"boxes": [[0, 0, 1, 1]]}]})[0].count("<rect") == 1
    svg, legend = grounding_html({"baseline": BASELINE, "steered": STEERED})
    assert "<script" not in svg + legend and "&lt;script&gt;" in svg and "&lt;script&gt;" in legend
    assert svg.count("<rect") == 5


def _study(run_dir: Path) -> StudyStore:
    """Two cases with a 640 × 480 frontal image (not square: the boxes live in its centre square);
    case 0 generated grounded, case 1 not."""
    store = StudyStore.open(run_dir)
    img_dir = run_dir / "images"
    img_dir.mkdir()
    yy, xx = np.mgrid[0:480, 0:640]
    cases = []
    for i in range(2):
        path = img_dir / f"c{i}.png"
        Image.fromarray((60 + (xx + yy) % 160).astype(np.uint8)).save(path)
        cases.append({"case_id": f"c{i}", "inputs": {"indication": f"cough, case {i}", "frontal": str(path)},
                      "split": "test"})
    store.add_cases(cases)
    store.add_features([{"feature_id": "f0", "source": "sae", "bank_index": 0, "description": "opacity",
                         "target_concepts": ["opacity"]}])
    rows = []
    steered_text = f"Left lower opacity {HOSTILE} No pneumothorax. malformed"  # the plain text of STEERED
    for i, (base, steered) in enumerate(((BASELINE, STEERED), (None, None))):
        for feature, alpha, grounding, text in ((BASELINE_FEATURE, 0.0, base, "Left lower opacity No pneumothorax."),
                                                ("f0", 8.0, steered, steered_text)):
            rows.append(dict(case_id=f"c{i}", feature_id=feature, alpha=alpha, settings_hash="s", text=text,
                             n_tokens=9, finish_reason="eos", seconds=0.1,
                             **({"grounding": grounding} if grounding is not None else {})))
    store.add_generations(rows)
    return store


MARKS = ("(() => Object.fromEntries(['rs-g-b', 'rs-g-s', 'rs-g-hl'].map(n => "
         "[n, [...(CSS.highlights.get(n) || [])].map(r => r.toString())])))()")
"""The report-text ranges the page script marked: sentences with boxes, and the hovered one."""


def _boxes(page, side: str) -> list[dict]:
    return page.eval_on_selector_all(
        f".rs-viewer[data-view=frontal] .rs-box-{side} rect",
        "rs => rs.map(r => { const b = r.getBoundingClientRect(); return {x: b.left, y: b.top, w: b.width, h: b.height}; })")


def _check_positions(page) -> None:
    """Every drawn box where its normalised coordinates put it in the displayed image's centre square."""
    img = page.eval_on_selector(".rs-viewer[data-view=frontal] img",
                                "i => { const b = i.getBoundingClientRect(); return {x: b.left, y: b.top, w: b.width, h: b.height}; }")
    assert abs(img["w"] / img["h"] - 640 / 480) < 0.01
    side = min(img["w"], img["h"])
    ox, oy = img["x"] + (img["w"] - side) / 2, img["y"] + (img["h"] - side) / 2
    for name, expected in EXPECTED.items():
        got = _boxes(page, name)
        assert len(got) == len(expected), (name, got)
        for (x0, y0, x1, y1), b in zip(expected, got):
            tol = 2.5
            assert abs(b["x"] - (ox + x0 * side)) < tol and abs(b["y"] - (oy + y0 * side)) < tol, (name, b, img)
            assert abs(b["w"] - (x1 - x0) * side) < tol and abs(b["h"] - (y1 - y0) * side) < tol, (name, b, img)


def test_grounded_boxes_over_the_frontal_image(browser, tmp_path: Path) -> None:
    store = _study(tmp_path)
    srv = Server(store, "change", None, overlap=0.0, seed=1)  # one local reader: both items in one queue
    shots = Path(__file__).resolve().parents[1] / "docs" if os.environ.get("RADSTEER_UPDATE_SCREENSHOTS") == "1" \
        else tmp_path
    try:
        page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
        page.goto(srv.url)
        page.wait_for_selector("#rs-progress", timeout=30_000)
        seen = set()
        for _ in range(2):  # the two items, in the reader's seeded order
            page.wait_for_function("() => { const i = document.querySelector('.rs-viewer img'); "
                                   "return i && i.complete && i.naturalWidth === 640; }", timeout=30_000)
            case = 0 if "case 0" in page.inner_text("#rs-header") else 1
            seen.add(case)
            if case == 1:  # generated without grounding: the viewer exactly as before
                assert page.eval_on_selector_all(".rs-boxes, #rs-grounding, [data-rs-box]", "es => es.length") == 0
                page.wait_for_function(f"() => {MARKS}['rs-g-s'].length === 0")
            else:
                _check_grounded(page, shots)
            page.click("h2")
            for k in ("1", "q", "a", "Enter"):
                page.keyboard.press(k)
            page.wait_for_function("n => (document.querySelector('#rs-progress')?.innerText || '').trim()"
                                   ".startsWith(n + ' /')", arg=str(len(seen)), timeout=15_000)
        assert seen == {0, 1}
    finally:
        srv.close()
        store.close()


def _check_grounded(page, shots: Path) -> None:
    frontal = ".rs-viewer[data-view=frontal]"
    assert page.eval_on_selector_all(f"{frontal} .rs-boxes", "es => es.length") == 1
    # two colours, told apart by class and by stroke
    strokes = {side: page.eval_on_selector(f"{frontal} .rs-box-{side} rect", "r => getComputedStyle(r).stroke")
               for side in ("baseline", "steered")}
    assert strokes["baseline"] != strokes["steered"]
    _check_positions(page)
    page.screenshot(path=str(shots / "annotation_grounding.png"), full_page=True)

    # hostile sentence: text in the hover title and the legend, never markup
    titles = page.eval_on_selector_all(f"{frontal} .rs-box-steered title", "ts => ts.map(t => t.textContent)")
    assert titles[1] == f"Steered S2: {HOSTILE}" and titles[0] == "Steered S1: Left lower opacity"
    assert page.evaluate("() => window.__pwned") is None
    assert page.eval_on_selector_all("#rs-images script, #rs-images img:not(.rs-img)", "es => es.length") == 0
    legend = page.inner_text("#rs-grounding")
    assert "B1 Left lower opacity" in legend and HOSTILE in legend and "malformed" in legend
    assert "No pneumothorax" not in legend  # a sentence without a box is not listed

    # the sentences with boxes are underlined in their reports' texts (found through the word diff)
    page.wait_for_function(f"() => {MARKS}['rs-g-s'].length === 3")
    marks = page.evaluate(MARKS)
    assert marks["rs-g-b"] == ["Left lower opacity"] and marks["rs-g-hl"] == []
    assert sorted(marks["rs-g-s"]) == sorted(["Left lower opacity", HOSTILE, "malformed"])
    # hovering a legend line highlights that sentence's boxes (both of S2's) and its text
    page.hover(".rs-gl-steered li[data-rs-box=S2]")
    assert page.eval_on_selector_all(f"{frontal} .rs-box.rs-hl", "es => es.map(e => e.dataset.rsBox)") == ["S2", "S2"]
    assert page.evaluate(MARKS)["rs-g-hl"] == [HOSTILE]

    # zoom in (button) and on the wheel, pan by dragging: the boxes stay on the image
    page.click(f"{frontal} button[data-act=in]")
    stage = page.locator(f"{frontal} .rs-stage").bounding_box()
    page.mouse.move(stage["x"] + stage["width"] * 0.3, stage["y"] + stage["height"] * 0.6)
    page.mouse.wheel(0, -200)
    page.mouse.down()
    page.mouse.move(stage["x"] + stage["width"] * 0.3 + 70, stage["y"] + stage["height"] * 0.6 - 40, steps=5)
    page.mouse.up()
    style = page.get_attribute(f"{frontal} .rs-layer", "style")
    assert "scale(1.4375)" in style and "translate(" in style
    _check_positions(page)

    # each report's boxes can be hidden
    page.click(f"{frontal} .rs-show[data-side=baseline]")
    assert all(b["w"] == 0 for b in _boxes(page, "baseline")) and all(b["w"] > 0 for b in _boxes(page, "steered"))
    page.click(f"{frontal} .rs-show[data-side=baseline]")
    page.click("h2")
    page.keyboard.press("0")  # reset zoom
    _check_positions(page)
