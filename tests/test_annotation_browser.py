"""The annotation app in a real headless Chromium (Debian's), driven by Playwright.

Logs in, answers three items by mouse and three by keyboard, reloads and resumes at the
right item, checks the rows in the store, and checks that a second annotator sees none of
the first one's answers. Saves screenshots of both tasks (to docs/ with RADSTEER_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.helpers_annotation import PASSWORDS, Server, make_accounts, make_study

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = Path(__file__).resolve().parents[1] / "docs"
"""Screenshots go to docs/ (for the README) only with RADSTEER_UPDATE_SCREENSHOTS=1, so that
running the suite does not dirty the shared working tree; otherwise to the test's tmp dir."""

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian chromium not installed at {CHROMIUM}"),
    pytest.mark.timeout(180),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def login(page, url: str, user: str) -> None:
    page.goto(url)
    page.fill("input[type=password]", PASSWORDS[user])
    page.fill("input[type=text]", user)
    page.click("button:has-text('Login')")
    page.wait_for_selector("#rs-progress", timeout=30_000)


def answered(page) -> int:
    return int(re.match(r"\s*(\d+) /", page.inner_text("#rs-progress")).group(1))


def wait_answered(page, n: int) -> None:
    page.wait_for_function(
        f"() => (document.querySelector('#rs-progress')?.innerText || '').trim().startsWith('{n} /')",
        timeout=15_000)


def test_annotate_by_mouse_and_keyboard_resume_and_isolation(browser, tmp_path: Path) -> None:
    store = make_study(tmp_path, n_cases=4, n_features=2)
    srv = Server(store, "change", make_accounts(tmp_path / "annotators.json"), overlap=0.0, seed=5)
    try:
        ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = ctx.new_page()
        login(page, srv.url, "alice")
        assert "&lt;script&gt;" not in page.inner_text("body")  # text, not double-escaped
        assert page.evaluate("() => !!document.querySelector('#rs-right script, #rs-header b b')") is False
        shots = DOCS if os.environ.get("RADSTEER_UPDATE_SCREENSHOTS") == "1" else tmp_path
        shots.mkdir(exist_ok=True)
        page.screenshot(path=str(shots / "annotation_change.png"), full_page=True)

        # three by mouse
        for i in range(3):
            page.click("#rs-label label:has-text('on-target')")
            page.click("#rs-interpretation_valid label:has-text('unsure')")
            page.click("#rs-coherent label:has-text('yes')")
            if i == 0:
                page.fill("#rs-comment textarea", "mouse <b>one</b>")
                page.click("#rs-flag input[type=checkbox]")
            page.click("#rs-submit")
            wait_answered(page, i + 1)
        # three by keyboard (focus away from inputs first)
        page.click("h2")
        for i in range(3):
            for key in ("2", "w", "s"):
                page.keyboard.press(key)
            if i == 1:
                page.keyboard.press("f")
            page.keyboard.press("Enter")
            wait_answered(page, 4 + i)

        rows = sorted(store.rows("annotations", annotator="alice"), key=lambda r: r["shown_order"])
        assert [r["shown_order"] for r in rows] == list(range(6))
        assert [r["answers"]["label"] for r in rows] == ["on"] * 3 + ["off"] * 3
        assert [r["answers"]["interpretation_valid"] for r in rows] == ["unsure"] * 3 + ["no"] * 3
        assert [r["answers"]["coherent"] for r in rows] == ["yes"] * 3 + ["no"] * 3
        assert [r["answers"]["flagged"] for r in rows] == [True, False, False, False, True, False]
        assert rows[0]["answers"]["comment"] == "mouse <b>one</b>"
        assert all(r["seconds"] is not None for r in rows)
        queue = [r["item_key"] for r in sorted(store.rows("queue_items", annotator="alice", task="change"),
                                                key=lambda r: r["position"])]
        assert [r["item_key"] for r in rows] == queue[:6]

        # reload: resume at item 7, in this browser and in a fresh one
        page.reload()
        page.wait_for_selector("#rs-progress")
        wait_answered(page, 6)
        assert "item 7 of" in page.inner_text("#rs-progress")
        other = browser.new_context().new_page()
        login(other, srv.url, "alice")
        assert "item 7 of" in other.inner_text("#rs-progress")
        # back shows her own earlier answer
        page.click("#rs-back")
        page.wait_for_function("() => document.querySelector('#rs-progress').innerText.includes('item 6 of')")
        assert page.is_checked("#rs-label input[value=off]")

        # bob: his own queue, none of alice's answers
        bob = browser.new_context().new_page()
        login(bob, srv.url, "bob")
        assert answered(bob) == 0
        body = bob.inner_text("body")
        assert "mouse <b>one</b>" not in body and "alice" not in body
        for field in ("label", "interpretation_valid", "coherent"):
            assert bob.evaluate(f"() => document.querySelectorAll('#rs-{field} input:checked').length") == 0
        assert store.rows("annotations", annotator="bob") == []
        ctx.close()
    finally:
        srv.close()

    # the feature task, for its screenshot and a keyboard submit
    fsrv = Server(store, "feature", tmp_path / "annotators.json", overlap=0.0, seed=5)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        login(page, fsrv.url, "alice")
        page.wait_for_selector("#rs-contexts .rs-tok")
        page.screenshot(path=str(shots / "annotation_feature.png"), full_page=True)
        assert (shots / "annotation_change.png").stat().st_size > 10_000
        page.click("h2")
        for key in ("2", "q", "Enter"):
            page.keyboard.press(key)
        wait_answered(page, 1)
        [row] = store.rows("annotations", annotator="alice", task="feature")
        assert row["answers"]["validity"] == "partly" and row["answers"]["clinically_relevant"] == "yes"
    finally:
        fsrv.close()
        store.close()


@pytest.mark.timeout(480)
def test_reader_study_images_zoom_keyboard_adjudication_and_restart(browser, tmp_path: Path) -> None:
    """Two readers see a MAIRA-2 case's frontal (PNG) and lateral (DICOM written by pydicom)
    images, zoom, pan and window them, and answer by keyboard, disagreeing; the adjudicator sees
    both answers and records the final one; a server restart keeps everyone logged in."""
    pytest.importorskip("pydicom")
    from tests.helpers_annotation import Server as _Server
    from tests.helpers_annotation import add_case_images

    store = make_study(tmp_path, n_cases=1, n_features=1)  # two change items
    add_case_images(store, tmp_path, size=518, dicom_lateral=True)
    accounts = make_accounts(tmp_path / "annotators.json")
    srv = _Server(store, ("change", "feature"), accounts, overlap=1.0, seed=3)
    shots = DOCS if os.environ.get("RADSTEER_UPDATE_SCREENSHOTS") == "1" else tmp_path
    try:
        pages = {}
        for who, key in (("alice", "1"), ("bob", "2")):
            ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
            page = ctx.new_page()
            login(page, srv.url, who)
            page.wait_for_function(
                "() => [...document.querySelectorAll('.rs-viewer img')].filter(i => i.complete && "
                "i.naturalWidth === 518).length === 2", timeout=30_000)
            views = page.eval_on_selector_all(".rs-viewer", "vs => vs.map(v => v.dataset.view)")
            assert views == ["frontal", "lateral"]
            # the image is the primary view on a wide screen
            img_w = page.eval_on_selector("#rs-images-col", "e => e.getBoundingClientRect().width")
            txt_w = page.eval_on_selector("#rs-text-col", "e => e.getBoundingClientRect().width")
            assert img_w > txt_w
            if who == "alice":
                page.screenshot(path=str(shots / "annotation_images.png"), full_page=True)
                frontal = ".rs-viewer[data-view=frontal]"
                page.click(f"{frontal} button[data-act=in]")
                assert "scale(1.25)" in page.get_attribute(f"{frontal} .rs-layer", "style")
                box = page.locator(f"{frontal} .rs-stage").bounding_box()
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                page.mouse.wheel(0, -200)
                page.mouse.down()
                page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2 + 30, steps=5)
                page.mouse.up()
                style = page.get_attribute(f"{frontal} .rs-layer", "style")
                assert "scale(1.4375)" in style and "translate(" in style
                page.eval_on_selector(f"{frontal} [data-wl=window]",
                                      "e => { e.value = 64; e.dispatchEvent(new Event('input', {bubbles: true})); }")
                assert page.get_attribute(f"{frontal} feFuncR", "slope").startswith("3.98")
                page.click("h2")
                page.keyboard.press("0")  # reset
                assert "scale(1)" in page.get_attribute(f"{frontal} .rs-layer", "style")
                assert page.get_attribute(f"{frontal} feFuncR", "slope") == "1.0000"
            page.click("h2")
            for i in range(2):  # both items, by keyboard; alice says on-target, bob off-target
                for k in (key, "q", "a"):
                    page.keyboard.press(k)
                page.keyboard.press("Enter")
                wait_answered(page, i + 1)
            pages[who] = page
        rows = store.rows("annotations", task="change")
        assert sorted((r["annotator"], r["answers"]["label"]) for r in rows) == \
            [("alice", "on"), ("alice", "on"), ("bob", "off"), ("bob", "off")]
        assert all(r["seconds"] is not None for r in rows)

        # alice switches to the feature task
        alice = pages["alice"]
        alice.click("#rs-task label:has-text('Feature validity')")
        alice.wait_for_selector("#rs-contexts .rs-tok")
        assert alice.eval_on_selector("#rs-item", "e => e.dataset.task") == "feature"

        # the adjudicator: both readers' answers, final answer by keyboard
        jctx = browser.new_context(viewport={"width": 1600, "height": 1000})
        judy = jctx.new_page()
        login(judy, srv.url, "judy")
        judy.wait_for_selector("#rs-readers .rs-differs")
        table = judy.inner_text("#rs-readers")
        assert "alice" in table and "bob" in table and "on" in table and "off" in table
        judy.wait_for_selector(".rs-viewer img")
        judy.screenshot(path=str(shots / "annotation_adjudication.png"), full_page=True)
        judy.click("h2")
        for k in ("3", "w", "a", "Enter"):
            judy.keyboard.press(k)
        judy.wait_for_function("() => (document.querySelector('#rs-progress')?.innerText || '').trim().startsWith('1 /')",
                               timeout=15_000)
        [adj] = store.adjudications("change")
        assert adj["adjudicator"] == "judy" and adj["answers"]["label"] == "both"
        assert adj["answers"]["interpretation_valid"] == "no" and set(adj["readers"]) == {"alice", "bob"}
    finally:
        srv.close()

    # a restart: same store, new server process state; both still logged in
    srv2 = _Server(store, ("change", "feature"), accounts, overlap=1.0, seed=3)
    try:
        for page in (alice, judy):
            page.goto(srv2.url)
            page.wait_for_selector("#rs-progress", timeout=30_000)
            assert "password" not in page.content().lower() or page.query_selector("input[type=password]") is None
        assert "Logged in as" in alice.inner_text("#rs-user") and "judy" in judy.inner_text("#rs-user")
        assert judy.eval_on_selector("#rs-item", "e => e.dataset.mode") == "adj"
    finally:
        srv2.close()
        store.close()
