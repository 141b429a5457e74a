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
