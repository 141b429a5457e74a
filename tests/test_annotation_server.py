"""The annotation server over real HTTP: logins (back-off, worker-thread scrypt), sessions in the
store (restart, revocation), case images behind tokens, task assignment, adjudication, and a
polite refusal for every bad request. Real SQLite, real scrypt, real uvicorn on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from annotation_ui.accounts import Accounts
from annotation_ui.sessions import COOKIE
from annotation_ui.throttle import LoginThrottle
from tests.helpers_annotation import PASSWORDS, Server, add_case_images, call, make_accounts, make_study

pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
def study(tmp_path: Path):
    store = make_study(tmp_path, n_cases=4, n_features=2)
    accounts = make_accounts(tmp_path / "annotators.json")
    yield store, accounts
    store.close()


def ref_of(body: dict) -> str:
    return body["data"][0]


# ---- login back-off (issue 11) ------------------------------------------------------------------


def test_login_backoff_per_client_with_retry_after_and_logged(study, caplog) -> None:
    store, accounts = study
    srv = Server(store, ("change", "feature"), accounts, throttle=LoginThrottle(free_client=3, base=3.0))
    caplog.set_level(logging.WARNING, logger="radsteer.annotation")
    try:
        with closing(srv.client(source="127.0.0.2")) as attacker:
            codes, retry = [], []
            for _ in range(30):
                r = attacker.post("/login", data={"username": "alice", "password": "wrong-password"})
                codes.append(r.status_code)
                retry.append(r.headers.get("retry-after"))
            assert codes[:3] == [400, 400, 400] and set(codes[3:]) == {429}
            assert all(v is not None and int(v) >= 1 for v in retry[3:])
            # the right password does not get through while this client is backed off
            r = attacker.post("/login", data={"username": "alice", "password": PASSWORDS["alice"]})
            assert r.status_code == 429 and "try again in" in r.json()["detail"]
            # after Retry-After seconds it does (and clears the back-off)
            time.sleep(int(r.headers["retry-after"]) + 0.2)
            r = attacker.post("/login", data={"username": "alice", "password": PASSWORDS["alice"]})
            assert r.status_code == 200
        # alice herself, from another client, was never locked out
        with closing(srv.client("alice", source="127.0.0.3")) as alice:
            assert call(alice, "next_item", "change")[0] == 200
        failed = [r.getMessage() for r in caplog.records if "failed login for 'alice'" in r.getMessage()]
        assert len(failed) == 3 and "127.0.0.2" in failed[0]
        assert any("backed off" in r.getMessage() for r in caplog.records)
    finally:
        srv.close()


def test_login_backoff_per_account_across_clients(study) -> None:
    store, accounts = study
    srv = Server(store, "change", accounts, throttle=LoginThrottle(free_client=50, free_account=4, base=30))
    try:
        for i in range(4):  # four clients, one guess each, all at bob
            with closing(srv.client(source=f"127.0.1.{i + 1}")) as c:
                assert c.post("/login", data={"username": "bob", "password": f"guess-{i}-xx"}).status_code == 400
        with closing(srv.client(source="127.0.1.9")) as c:
            r = c.post("/login", data={"username": "bob", "password": PASSWORDS["bob"]})
            assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60  # the account's cap
            # other accounts from that client are unaffected
            assert c.post("/login", data={"username": "alice", "password": PASSWORDS["alice"]}).status_code == 200
    finally:
        srv.close()


def test_throttle_unit_forgets_and_is_bounded() -> None:
    now = [0.0]
    t = LoginThrottle(free_client=2, free_account=100, base=1.0, forget=10, max_entries=100, clock=lambda: now[0])
    t.failed("a", "c1")
    assert t.retry_after("a", "c1") == 0
    t.failed("a", "c1")
    assert t.retry_after("a", "c1") == 1
    t.failed("a", "c1")
    assert t.retry_after("a", "c1") == 2  # doubles
    now[0] = 100.0  # long after: counters forgotten
    t.failed("a", "c1")
    assert t.retry_after("a", "c1") == 0
    for i in range(1000):  # a flood of invented names stays bounded
        t.failed(f"name{i}", f"10.0.{i // 250}.{i % 250}")
    assert len(t._entries) <= 100


# ---- scrypt off the event loop (issue 11) --------------------------------------------------------


def test_logins_do_not_stall_other_readers(study) -> None:
    """bob's next_item median while 4 threads post (correct) logins, against without: the scrypt
    checks run in one worker thread, so the event loop keeps serving. The audit saw 7 ms → 4 s."""
    store, accounts = study
    srv = Server(store, "change", accounts)
    try:
        with closing(srv.client("bob")) as bob:
            def median_next(n: int = 15) -> float:
                lat = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    assert call(bob, "next_item", "change")[0] == 200
                    lat.append(time.perf_counter() - t0)
                return statistics.median(lat)

            quiet = median_next()
            stop = threading.Event()
            logins = [0]

            def hammer() -> None:
                with closing(srv.client()) as c:
                    while not stop.is_set():
                        c.post("/login", data={"username": "alice", "password": PASSWORDS["alice"]})
                        logins[0] += 1

            threads = [threading.Thread(target=hammer) for _ in range(4)]
            for th in threads:
                th.start()
            time.sleep(0.5)
            loaded = median_next()
            stop.set()
            for th in threads:
                th.join()
        print(f"next_item median quiet {quiet * 1000:.1f} ms, during logins {loaded * 1000:.1f} ms "
              f"({logins[0]} logins)")
        assert logins[0] >= 4
        assert loaded < max(10 * quiet, 0.25)  # blocked, it would wait for the hash queue (seconds)
    finally:
        srv.close()


# ---- sessions in the store (issue 11, issue 14) ---------------------------------------------------


def test_sessions_survive_a_restart_and_end_on_credential_change(study, tmp_path: Path) -> None:
    store, accounts = study
    srv = Server(store, "change", accounts)
    alice, bob = srv.client("alice"), srv.client("bob")
    tokens = {n: c.cookies[COOKIE] for n, c in (("alice", alice), ("bob", bob))}
    assert all(t not in json.dumps(store.rows("sessions"), default=str) for t in tokens.values())  # only hashes stored
    assert call(alice, "next_item", "change")[0] == 200
    alice.close(), bob.close()
    srv.close()

    srv2 = Server(store, "change", accounts)  # a restart: new process state, same store
    try:
        with closing(srv2.client(cookies={COOKIE: tokens["alice"]})) as a2, \
                closing(srv2.client(cookies={COOKIE: tokens["bob"]})) as b2:
            assert call(a2, "next_item", "change")[0] == 200
            assert b2.get("/").status_code == 200 and "rs-user" not in b2.get("/login").text
            # alice's password changes: her old session ends at the next request
            Accounts(accounts).add("alice", "a-new-password")
            status, body = call(a2, "next_item", "change")
            assert status == 401 and "Not authenticated" in json.dumps(body)
            assert a2.get("/", follow_redirects=False).status_code == 303  # to the login form
            assert call(b2, "next_item", "change")[0] == 200  # bob untouched
            # bob is removed from annotators.json: his session ends too
            acc = Accounts(accounts)
            acc.remove("bob")
            assert call(b2, "next_item", "change")[0] == 401
            # a role change is a credential change as well
            with closing(srv2.client("alice", password="a-new-password")) as a3:
                assert call(a3, "next_item", "change")[0] == 200
                Accounts(accounts).add("alice", "a-new-password", role="admin")
                assert call(a3, "next_item", "change")[0] == 401
            # log out ends the session server-side
            with closing(srv2.client("boss")) as boss:
                token = boss.cookies[COOKIE]
                boss.get("/logout")
            with closing(srv2.client(cookies={COOKIE: token})) as stale:
                assert call(stale, "progress")[0] == 401
    finally:
        srv2.close()


# ---- refusals over HTTP ---------------------------------------------------------------------------


def test_every_refusal_is_polite(study, caplog) -> None:
    store, accounts = study
    srv = Server(store, "change", accounts)
    caplog.set_level(logging.INFO)
    try:
        with closing(srv.client("alice")) as alice, closing(srv.client("judy")) as judy:
            ref = ref_of(call(alice, "next_item", "change")[1])
            bad_refs = ["change:99999999999999999999999:1", "change:0:99999999999999999999999", "adj:change:1",
                        "feature:0:f0", "", "x" * 5000, "change:0:1\u0000"]
            for bad in bad_refs:
                for endpoint, args in (("submit", ("on", "yes", "yes", None, None, "", False)), ("skip", ()),
                                       ("back", ())):
                    status, body = call(alice, endpoint, bad, *args)
                    text = json.dumps(body)
                    assert "reload the page" in text or "not assigned" in text or "not an item" in text, (bad, text)
            # tasks not served / not assigned, adjudication by a reader, reading by an adjudicator
            for who, mode, expect in ((alice, "feature", "not a task of this server"), (alice, "adj", "not assigned"),
                                      (judy, "change", "not assigned"), (alice, "nonsense", "not a task")):
                assert expect in json.dumps(call(who, "next_item", mode)[1])
            assert "Only admin" in json.dumps(call(alice, "progress")[1])
            # oversize form fields and empty names at /login
            with closing(srv.client()) as anon:
                assert anon.post("/login", data={"username": "a" * 500, "password": "x"}).status_code == 400
                assert anon.post("/login", data={"username": "alice", "password": "x" * 5000}).status_code == 400
                assert anon.post("/login", data={"username": "", "password": ""}).status_code == 400
                assert anon.get("/", follow_redirects=False).status_code == 303
                assert call(anon, "next_item", "change")[0] == 401
            assert call(alice, "submit", ref, "on", "yes", "yes", None, None, "", False)[0] == 200
        assert store.count("annotations") == 1
        assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    finally:
        srv.close()


def test_api_calls_reuse_one_gradio_session_per_login_and_raw_inputs_are_checked(study, caplog) -> None:
    """The reader's loop without Gradio's per-call session state and per-component processing
    (issue 14): API calls without `session_hash` share one Gradio session per login (named by a
    hash, never the cookie), hostile bodies and raw values of the wrong type are refused politely,
    and nothing but a valid answer is stored."""
    store, accounts = study
    srv = Server(store, "change", accounts)
    caplog.set_level(logging.INFO)
    holder = srv.app.blocks.state_holder
    try:
        with closing(srv.client("alice")) as alice, closing(srv.client("bob")) as bob:
            before = set(holder.session_data)
            for _ in range(3):
                assert call(alice, "next_item", "change")[0] == 200
                assert call(bob, "next_item", "change")[0] == 200
            named = set(holder.session_data) - before
            assert len(named) == 2 and all(n.startswith("rs-") for n in named)
            assert not any(alice.cookies[COOKIE] in n or bob.cookies[COOKIE] in n for n in named)
            # a client that names its own session keeps it
            r = alice.post("/gradio_api/run/next_item", json={"data": ["change"], "session_hash": "mine-123"})
            assert r.status_code == 200 and "mine-123" in holder.session_data
            ref = ref_of(call(alice, "next_item", "change")[1])
            # raw values of the wrong type (no Gradio preprocessing on these events)
            for args in (([ref], "on", "yes", "yes", None, None, "", False), ({"r": ref}, "on", "yes", "yes", None, None,
                                                                               "", False),
                         (ref, ["on"], "yes", "yes", None, None, "", False), (ref, "on", "yes", "yes", None, None,
                                                                             {"x": 1}, False),
                         (ref, 3, "yes", "yes", None, None, "", False)):
                status, body = call(alice, "submit", *args)
                assert status != 200 and "error" in body, (args, body)
            assert call(alice, "next_item", ["change"])[0] != 200 and call(alice, "skip", 7)[0] != 200
            # bodies that are not a small JSON object: refused, never a hang or a server error
            bad = [b"not json", b"[1, 2]", b'{"data": "x"}', b"\xff\xfe"]
            for content in bad:
                r = alice.post("/gradio_api/run/next_item", content=content,
                               headers={"content-type": "application/json"})
                assert 400 <= r.status_code < 500 or "error" in r.text, (content, r.status_code)

            def chunks():  # a large body in pieces: passed on unread, Gradio refuses it
                for _ in range(40):
                    yield b"x" * 16384

            r = alice.post("/gradio_api/run/next_item", content=chunks(), headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500
            assert call(alice, "submit", ref, "on", "yes", "yes", None, None, "ok", True)[0] == 200
        rows = store.rows("annotations")
        assert len(rows) == 1 and rows[0]["answers"]["comment"] == "ok" and rows[0]["answers"]["flagged"] is True
        assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    finally:
        srv.close()


# ---- images ---------------------------------------------------------------------------------------


def test_case_images_only_to_the_reader_they_were_issued_to(study, tmp_path: Path) -> None:
    store, accounts = study
    add_case_images(store, tmp_path, size=64, dicom_lateral=True)
    srv = Server(store, "change", accounts, overlap=0.0)
    try:
        with closing(srv.client("alice")) as alice, closing(srv.client("bob")) as bob:
            _, body = call(alice, "next_item", "change")
            images = body["data"][4]
            urls = [u for u in images.split('src="')[1:]]
            urls = [u.split('"')[0] for u in urls]
            assert len(urls) == 2 and "Frontal" in images and "Lateral" in images
            assert all(u.startswith("rs/image/") and ".png" not in u and "c0" not in u for u in urls)
            for u in urls:
                r = alice.get("/" + u)
                assert r.status_code == 200 and r.headers["content-type"] == "image/png"
                assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
                assert bob.get("/" + u).status_code == 404  # issued to alice, not bob
                with closing(srv.client()) as anon:
                    assert anon.get("/" + u).status_code == 401
            for guess in ("rs/image/..%2Fstudy.sqlite", "rs/image/" + "A" * 32, "rs/image/c0_pa.png"):
                assert alice.get("/" + guess).status_code in (404, 401)
            # text-only cases show no viewer
        store2 = make_study(tmp_path / "textonly", n_cases=1, n_features=1)
        srv2 = Server(store2, "change", make_accounts(tmp_path / "textonly" / "a.json"))
        with closing(srv2.client("alice")) as a2:
            assert call(a2, "next_item", "change")[1]["data"][4] == ""
        srv2.close()
        store2.close()
    finally:
        srv.close()


# ---- one server, assignments, adjudication --------------------------------------------------------


def test_assignments_and_adjudication_over_http(study) -> None:
    store, accounts = study
    srv = Server(store, ("change", "feature"), accounts, overlap=1.0, seed=1,
                 assignments={"alice": ("change", "feature"), "bob": ("change",)})
    try:
        with closing(srv.client("alice")) as alice, closing(srv.client("bob")) as bob, \
                closing(srv.client("judy")) as judy:
            assert "not assigned" in json.dumps(call(bob, "next_item", "feature")[1])
            assert call(alice, "next_item", "feature")[0] == 200
            # both read the same first items (overlap 1.0); they disagree on the first, agree on the second
            a_ref = ref_of(call(alice, "next_item", "change")[1])
            b_ref = ref_of(call(bob, "next_item", "change")[1])
            key_a = a_ref.split(":")[2]
            assert call(alice, "submit", a_ref, "on", "yes", "yes", None, None, "alice says on", False)[0] == 200
            # bob answers the same item (find it in his queue by walking)
            while b_ref.split(":")[2] != key_a:
                b_ref = ref_of(call(bob, "skip", b_ref)[1])
            assert call(bob, "submit", b_ref, "off", "yes", "yes", None, None, "bob says off", True)[0] == 200
            _, adj = call(judy, "next_item", "adj")
            ref = ref_of(adj)
            assert ref == f"adj:change:{key_a}"
            text = json.dumps(adj)
            assert "alice says on" in text and "bob says off" in text and "disagreement+flagged" in text
            assert "not assigned" in json.dumps(call(alice, "submit", ref, "on", "yes", "yes", None, None, "", False)[1])
            assert "choose one of" in json.dumps(call(judy, "submit", ref, None, "yes", "yes", None, None, "", False)[1])
            assert call(judy, "submit", ref, "both", "no", "yes", None, None, "final", False)[0] == 200
            [row] = store.adjudications("change")
            assert row["item_key"] == key_a and row["answers"]["label"] == "both" and row["adjudicator"] == "judy"
            assert set(row["readers"]) == {"alice", "bob"} and row["seconds"] is not None
            # an item without disagreement cannot be adjudicated
            other = next(k for k in (r["item_key"] for r in store.rows("queue_items", task="change")) if k != key_a)
            assert "does not need adjudication" in json.dumps(
                call(judy, "submit", f"adj:change:{other}", "on", "yes", "yes", None, None, "", False)[1])
    finally:
        srv.close()
