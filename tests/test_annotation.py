"""The annotation app without a browser: accounts, queues, persistence and the HTTP API.

Real SQLite stores, real scrypt hashes and (for the API tests) the real Gradio server on
127.0.0.1, logged in through its /login form."""

from __future__ import annotations

import json
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest

from annotation_ui import persistence, queues
from annotation_ui.accounts import Accounts
from annotation_ui.app import check_serving
from annotation_ui.export import annotations_frame, export_annotations
from annotation_ui.persistence import MAX_COMMENT, AnnotationInputError
from annotation_ui.queues import QueueConfig
from annotation_ui.service import AnnotationService
from steering.errors import RadsteerError
from tests.helpers_annotation import PASSWORDS, Server, call, make_accounts, make_study

GOOD = {"label": "on", "interpretation_valid": "yes", "coherent": "yes", "comment": "", "flagged": False}


@pytest.fixture()
def study(tmp_path: Path):
    store = make_study(tmp_path, n_cases=5, n_features=2)
    yield store
    store.close()


# ---- accounts ---------------------------------------------------------------------------------


def test_accounts_store_salted_hashes_only(tmp_path: Path) -> None:
    path = make_accounts(tmp_path / "annotators.json")
    text = path.read_text()
    assert all(pw not in text for pw in PASSWORDS.values())
    users = json.loads(text)["users"]
    assert len({u["scrypt"]["salt"] for u in users}) == len(users)  # one salt per user
    assert path.stat().st_mode & 0o077 == 0
    acc = Accounts(path)
    assert acc.verify("alice", PASSWORDS["alice"])
    assert not acc.verify("alice", PASSWORDS["bob"])
    assert not acc.verify("mallory", PASSWORDS["alice"])
    assert acc.annotators() == ["alice", "bob"] and acc.is_admin("boss")


def test_accounts_refuse_bad_names_and_short_passwords(tmp_path: Path) -> None:
    acc = Accounts(tmp_path / "a.json")
    with pytest.raises(RadsteerError, match="password for 'x'"):
        acc.add("x", "short")
    with pytest.raises(RadsteerError, match="user name"):
        acc.add("a b", "long-enough-pw")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(RadsteerError, match="broken.json"):
        Accounts(tmp_path / "broken.json")


def test_serving_beyond_loopback_needs_accounts(tmp_path: Path) -> None:
    check_serving("127.0.0.1", None)
    check_serving("localhost", None)
    with pytest.raises(RadsteerError, match="--host 0.0.0.0: refusing"):
        check_serving("0.0.0.0", None)
    check_serving("0.0.0.0", Accounts(make_accounts(tmp_path / "a.json")))


# ---- queues -----------------------------------------------------------------------------------


def test_queues_are_seeded_recorded_and_double_read(tmp_path: Path) -> None:
    orders = []
    for run in ("a", "b"):
        store = make_study(tmp_path / run, n_cases=5, n_features=2)
        queues.sync_queues(store, "change", ["alice", "bob", "carol"], QueueConfig(overlap=0.25, seed=7))
        orders.append({a: [q.item_key for q in queues.queue_of(store, a, "change")] for a in ("alice", "bob", "carol")})
        items = queues.task_items(store, "change")
        reads = Counter(k for keys in orders[-1].values() for k in keys)
        assert set(reads) == set(items)  # every item is read
        assert sum(1 for n in reads.values() if n == 2) == round(0.25 * len(items))
        assert max(reads.values()) == 2
        flagged = {r["item_key"] for r in store.rows("queue_items") if r["double_read"]}
        assert flagged == {k for k, n in reads.items() if n == 2}
        # idempotent: a restart adds nothing and keeps the order
        assert queues.sync_queues(store, "change", ["alice", "bob", "carol"], QueueConfig(overlap=0.25, seed=7)) \
            == {"alice": 0, "bob": 0, "carol": 0}
        store.close()
    assert orders[0] == orders[1]  # same seed, same queues
    other = make_study(tmp_path / "c", n_cases=5, n_features=2)
    queues.sync_queues(other, "change", ["alice", "bob", "carol"], QueueConfig(overlap=0.25, seed=8))
    assert [q.item_key for q in queues.queue_of(other, "alice", "change")] != orders[0]["alice"]
    other.close()


def test_disagreements_first(study) -> None:
    queues.sync_queues(study, "change", ["alice"], QueueConfig(overlap=0, seed=1, disagreements_first=True))
    flagged = queues.disagreement_items(study, "change")
    keys = [q.item_key for q in queues.queue_of(study, "alice", "change")]
    assert flagged and set(keys[: len(flagged)]) == flagged


def test_resume_after_restart_and_back(study) -> None:
    svc = AnnotationService(study, "change", QueueConfig(seed=3), ["alice", "bob"])
    first = svc.current("alice")
    v = svc.submit("alice", first.ref, GOOD)
    v = svc.skip("alice", v.ref)
    third = v.ref
    # a new service (server restart) resumes at the first unanswered item
    svc2 = AnnotationService(study, "change", QueueConfig(seed=3), ["alice", "bob"])
    again = svc2.current("alice")
    assert again.ref == third and again.done == 2
    back = svc2.back("alice", again.ref)
    assert back.answers == {"skipped": True, "blinded": True}
    back2 = svc2.back("alice", back.ref)
    assert back2.ref == first.ref and back2.answers["label"] == "on"


def test_app_runs_without_verdicts_or_contexts(tmp_path: Path) -> None:
    store = make_study(tmp_path, verdicts=False, contexts=False)
    change = AnnotationService(store, "change", QueueConfig(disagreements_first=True), ["alice"], show_automated=True)
    assert "none recorded" in change.current("alice").header
    feature = AnnotationService(store, "feature", QueueConfig(), ["alice"])
    assert "No top-activating contexts" in feature.current("alice").left
    store.close()


def test_study_text_is_escaped(study) -> None:
    svc = AnnotationService(study, "change", QueueConfig(overlap=0), ["alice"])
    v = svc.current("alice")
    while "alert" not in v.right:
        v = svc.skip("alice", v.ref)
    assert "<script>" not in v.right and "&lt;script&gt;" in v.right
    assert "<b>bold</b>" not in v.header and "&lt;b&gt;bold" in v.header
    feat = AnnotationService(study, "feature", QueueConfig(overlap=0), ["alice"]).current("alice")
    assert "<i>is</i>" not in feat.left and "&lt;i&gt;" in feat.left


def test_blinded_by_default(study) -> None:
    assert "Automated label" not in AnnotationService(study, "change", QueueConfig(), ["a"]).current("a").header
    shown = AnnotationService(study, "change", QueueConfig(), ["a"], show_automated=True).current("a")
    assert "Automated label" in shown.header


def test_each_read_records_whether_it_was_blinded(study) -> None:
    from evaluation.reader_study import reads_table
    from evaluation.study_data import from_store

    blind = AnnotationService(study, "change", QueueConfig(overlap=0), ["a"])
    blind.submit("a", blind.current("a").ref, {**GOOD, "blinded": False})  # a client cannot claim otherwise
    open_ = AnnotationService(study, "change", QueueConfig(overlap=0), ["b"], show_automated=True)
    open_.submit("b", open_.current("b").ref, GOOD)
    stored = {r["annotator"]: r["answers"]["blinded"] for r in study.rows("annotations")}
    assert stored == {"a": True, "b": False}
    reads = reads_table(from_store(study))
    assert dict(zip(reads.annotator, reads.blinded)) == {"a": True, "b": False}


# ---- persistence ------------------------------------------------------------------------------


def test_resubmit_updates_and_never_duplicates(study) -> None:
    svc = AnnotationService(study, "change", QueueConfig(), ["alice", "bob"])
    v = svc.current("alice")
    svc.submit("alice", v.ref, GOOD)
    svc.submit("alice", v.ref, {**GOOD, "label": "both", "comment": "changed my mind"})
    rows = study.rows("annotations", annotator="alice")
    assert len(rows) == 1
    assert rows[0]["answers"]["label"] == "both" and rows[0]["answers"]["comment"] == "changed my mind"
    assert rows[0]["generation_id"] == int(v.ref.split(":")[2]) and rows[0]["feature_id"].startswith("f")
    assert rows[0]["seconds"] is not None and rows[0]["seconds"] >= 0


def test_submit_is_one_transaction(study, monkeypatch) -> None:
    """A failure inside the transaction (after the queue check) leaves nothing behind."""
    svc = AnnotationService(study, "change", QueueConfig(), ["alice"])
    v = svc.current("alice")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(study, "_answer_upsert", boom)  # the store's write, inside its transaction
    with pytest.raises(RuntimeError):
        svc.submit("alice", v.ref, GOOD)
    assert study.count("annotations") == 0


@pytest.mark.parametrize("raw, match", [
    ({**GOOD, "label": "maybe"}, "label: 'maybe' is not one of on / off / both / none"),
    ({**GOOD, "coherent": None}, "coherent: choose one of yes / no"),
    ({**GOOD, "comment": "x" * (MAX_COMMENT + 1)}, f"comment: {MAX_COMMENT + 1} characters is over the limit"),
])
def test_bad_answers_refused_nothing_stored(study, raw, match) -> None:
    svc = AnnotationService(study, "change", QueueConfig(), ["alice"])
    with pytest.raises(AnnotationInputError, match=match):
        svc.submit("alice", svc.current("alice").ref, raw)
    assert study.count("annotations") == 0


def test_tampered_and_foreign_items_refused(study) -> None:
    svc = AnnotationService(study, "change", QueueConfig(overlap=0), ["alice", "bob"])
    mine, theirs = svc.current("alice"), svc.current("bob")
    pos, key = persistence.parse_item_ref(mine.ref, "change")
    for ref in (f"change:{pos}:999999", f"feature:{pos}:{key}", "change:x:1", "",
                theirs.ref, f"change:{pos}:{theirs.ref.split(':')[2]}"):
        with pytest.raises(AnnotationInputError, match="reload the page|not in your queue"):
            svc.submit("alice", ref, GOOD)
    assert study.count("annotations") == 0


def test_export_csv_and_parquet(study, tmp_path: Path) -> None:
    svc = AnnotationService(study, "change", QueueConfig(), ["alice"])
    v = svc.submit("alice", svc.current("alice").ref, GOOD)
    svc.skip("alice", v.ref)
    df = annotations_frame(study)
    assert df.label.iloc[0] == "on" and df.label.isna().iloc[1] and list(df.skipped) == [False, True]
    assert export_annotations(study, tmp_path / "a.csv") == 2
    assert export_annotations(study, tmp_path / "a.parquet") == 2
    with pytest.raises(RadsteerError, match="--export"):
        export_annotations(study, tmp_path / "a.txt")


# ---- the real HTTP API ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request, tmp_path_factory):
    """The HTTP tests run against the app on SQLite and on a real PostgreSQL server."""
    d = tmp_path_factory.mktemp("annot_http")
    url = request.getfixturevalue("pg_server").create_database() if request.param == "postgres" else None
    store = make_study(d, n_cases=4, n_features=2, url=url)
    srv = Server(store, "change", make_accounts(d / "annotators.json"), overlap=0.0, seed=2)
    yield srv, store
    srv.close()
    store.close()


def test_http_login_refuses_unknown_user_and_wrong_password(server) -> None:
    srv, store = server
    import httpx

    with httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/login", data={"username": "mallory", "password": PASSWORDS["alice"]})
        assert r.status_code == 400 and "Incorrect credentials" in r.text
        r = c.post("/login", data={"username": "alice", "password": "wrong-password"})
        assert r.status_code == 400
        status, body = call(c, "next_item", "change")
        assert status == 401 and "Not authenticated" in json.dumps(body)
        status, _ = call(c, "submit", "change:0:1", "on", "yes", "yes", None, None, "", False)
        assert status == 401
    assert store.count("annotations") == 0


def test_http_identity_comes_from_login_only(server) -> None:
    srv, store = server
    with closing(srv.client("alice")) as alice, closing(srv.client("bob")) as bob:
        _, a = call(alice, "next_item", "change")
        _, b = call(bob, "next_item", "change")
        a_ref, b_ref = a["data"][0], b["data"][0]
        # bob cannot store into alice's item, nor tamper with the id
        for ref in (a_ref, "change:0:424242"):
            status, body = call(bob, "submit", ref, "on", "yes", "yes", None, None, "", False)
            assert status != 200 or "error" in json.dumps(body).lower()
            assert "not in your queue" in json.dumps(body) or "reload the page" in json.dumps(body)
        status, body = call(alice, "submit", a_ref, "on", "yes", "yes", None, None, "x" * (MAX_COMMENT + 1), False)
        assert "over the limit" in json.dumps(body)
        assert store.count("annotations") == 0
        status, body = call(alice, "submit", a_ref, "off", "no", "yes", None, None, "alice's secret remark", True)
        assert status == 200
        assert [r["annotator"] for r in store.rows("annotations")] == ["alice"]
        # bob's page and API never show alice's answer; admin-only progress refused to bob
        _, b2 = call(bob, "next_item", "change")
        assert b2["data"][0] == b_ref and "secret" not in json.dumps(b2)
        status, body = call(bob, "progress")
        assert "Only admin" in json.dumps(body)
        _, back = call(alice, "back", call(alice, "next_item", "change")[1]["data"][0])
        assert back["data"][0] == a_ref and "alice's secret remark" in json.dumps(back)
    with closing(srv.client("boss")) as boss:
        _, table = call(boss, "progress")
        assert "rs-admin-table" in table["data"][0] and "secret" not in table["data"][0]


# ---- the command line -------------------------------------------------------------------------


def test_cli_add_user_export_and_refusals(tmp_path: Path, monkeypatch, capsys) -> None:
    import io

    from protocols.cli import main

    make_study(tmp_path, n_cases=2, n_features=1).close()
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["annotate", str(tmp_path), "--add-user", "carol", "--password-stdin"]) == 0
    assert Accounts(tmp_path / "annotators.json").verify("carol", "a-long-password")
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["annotate", str(tmp_path), "--add-user", "dave", "--password-stdin"]) == 2
    assert "password for 'dave'" in capsys.readouterr().err
    (tmp_path / "annotators.json").unlink()
    assert main(["annotate", str(tmp_path), "--host", "0.0.0.0"]) == 2
    assert "refusing to serve beyond localhost without authentication" in capsys.readouterr().err
    assert main(["annotate", str(tmp_path / "nowhere")]) == 2
    assert "no study.sqlite" in capsys.readouterr().err
    assert main(["annotate", str(tmp_path), "--export", str(tmp_path / "out.csv")]) == 0
    assert (tmp_path / "out.csv").read_text().startswith("task,item_key,annotator")


def test_finished_queue_then_back(tmp_path: Path) -> None:
    store = make_study(tmp_path, n_cases=1, n_features=1)
    svc = AnnotationService(store, "change", QueueConfig(), ["alice"])
    v = svc.current("alice")
    while not v.finished:
        v = svc.skip("alice", v.ref)
    assert v.done == v.total == 2 and "All your items are answered" in v.header
    with pytest.raises(AnnotationInputError, match="nothing to submit"):
        svc.submit("alice", v.ref, GOOD)
    last = svc.back("alice", v.ref)
    assert last.position == 1 and last.answers == {"skipped": True, "blinded": True}
    svc.submit("alice", last.ref, GOOD)
    assert store.count("annotations") == 2 and svc.current("alice").finished
    store.close()


# ---- hardening (issue 11) ---------------------------------------------------------------------


@pytest.mark.parametrize("ref", [
    "change:99999999999999999999999:1", "change:0:99999999999999999999999", "change:0:-1", "change:0:1e3",
    "change:" + "9" * 400 + ":1", "change:0:" + "1" * 5000, "change:0:1\x00", "change:00:1 ",
])
def test_item_references_validated_in_every_part(study, ref) -> None:
    svc = AnnotationService(study, "change", QueueConfig(overlap=0), ["alice"])
    svc.current("alice")
    for act in (lambda: svc.submit("alice", ref, GOOD), lambda: svc.skip("alice", ref),
                lambda: svc.back("alice", ref)):
        with pytest.raises(AnnotationInputError, match="reload the page|not in your queue"):
            act()
    assert study.count("annotations") == 0


def test_cli_add_user_refuses_a_directory_without_a_study(tmp_path: Path, monkeypatch, capsys) -> None:
    import io

    from protocols.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["annotate", str(tmp_path / "typo"), "--add-user", "carol", "--password-stdin"]) == 2
    assert "no study.sqlite" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["annotate", str(tmp_path / "empty"), "--add-user", "carol", "--password-stdin"]) == 2
    assert list((tmp_path / "empty").iterdir()) == []


def test_store_sessions_and_adjudications(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    store = make_study(tmp_path, n_cases=1, n_features=1)
    now = datetime.now(timezone.utc)
    store.add_session("h1", "alice", "cred1", now + timedelta(hours=1))
    store.add_session("h2", "alice", "cred1", now - timedelta(hours=1))
    store.add_session("h3", "bob", "cred2", now + timedelta(hours=1))
    assert store.session("h1")["annotator"] == "alice" and store.session("h1")["expires_at"] > now
    assert store.session("nope") is None
    assert store.delete_sessions(expired_before=now) == 1 and store.session("h2") is None
    assert store.delete_sessions(annotator="alice") == 1 and store.session("h3") is not None
    with pytest.raises(ValueError):
        store.delete_sessions()
    readers = {"alice": {"label": "on"}, "bob": {"label": "off"}}
    store.save_adjudication("change", "2", "carol", {"label": "on"}, reason="disagreement", readers=readers,
                            seconds=4.0)
    store.save_adjudication("change", "2", "carol", {"label": "both"}, reason="disagreement", readers=readers,
                            seconds=1.5)
    [row] = store.adjudications("change")
    assert row["answers"] == {"label": "both"} and row["seconds"] == 5.5 and row["readers"] == readers
    assert store.adjudications("feature") == [] and store.adjudication("change", "2")["adjudicator"] == "carol"
    assert len(store.dataframe("adjudications")) == 1
    store.close()


def test_cli_roles_tasks_removal_and_assignments(tmp_path: Path, monkeypatch, capsys) -> None:
    import io

    from annotation_ui.app import open_app, read_assignments
    from protocols.cli import main

    make_study(tmp_path, n_cases=2, n_features=1).close()

    def add(*extra: str) -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
        return main(["annotate", str(tmp_path), "--password-stdin", *extra])

    assert add("--add-user", "bob", "--task", "change") == 0
    assert add("--add-user", "judy", "--adjudicator") == 0
    assert add("--add-user", "x", "--admin", "--adjudicator") == 2
    assert "choose one role" in capsys.readouterr().err
    acc = Accounts(tmp_path / "annotators.json")
    assert acc.tasks_of("bob") == ("change",) and acc.role("judy") == "adjudicator" and acc.tasks_of("judy") == ()
    assert add("--add-user", "bob") == 0  # a new password keeps his tasks
    assert Accounts(tmp_path / "annotators.json").tasks_of("bob") == ("change",)
    assert main(["annotate", str(tmp_path), "--remove-user", "bob"]) == 0
    assert "bob" not in Accounts(tmp_path / "annotators.json")
    assert main(["annotate", str(tmp_path), "--remove-user", "bob"]) == 2
    assert "is not in" in capsys.readouterr().err
    (tmp_path / "tasks.json").write_text('{"judy": ["change"], "zed": ["feature"]}')
    with pytest.raises(RadsteerError, match="'zed' not in"):
        open_app(tmp_path, assignments=tmp_path / "tasks.json")
    (tmp_path / "bad.json").write_text('{"judy": ["reading"]}')
    with pytest.raises(RadsteerError, match=r"--assignments .*bad.json: field 'judy'"):
        read_assignments(tmp_path / "bad.json")
