"""The study store: idempotent writes, natural keys, DataFrame export, no torch at import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from steering.store import BASELINE_FEATURE, StudyStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    """Every store test runs on SQLite and on a real PostgreSQL server."""
    s = (StudyStore.open(tmp_path / "run") if request.param == "sqlite"
         else StudyStore(request.getfixturevalue("pg_url")))
    yield s
    s.close()


def _gen(case: str, feature: str, alpha: float, text: str = "t") -> dict:
    return dict(case_id=case, feature_id=feature, alpha=alpha, settings_hash="s", text=text,
                n_tokens=1, finish_reason="eos", seconds=0.0)


def test_generations_are_stored_once(store: StudyStore) -> None:
    store.add_cases([{"case_id": "c1", "inputs": {}, "split": "test"}])
    rows = [_gen("c1", BASELINE_FEATURE, 0.0), _gen("c1", "f1", 10.0), _gen("c1", "f1", -10.0)]
    assert store.add_generations(rows) == 3
    assert store.add_generations(rows) == 0  # a resumed step writes the same rows again
    assert store.count("generations") == 3
    assert store.generation_keys("s") == {("c1", "", 0.0), ("c1", "f1", 10.0), ("c1", "f1", -10.0)}


def test_upsert_updates_instead_of_duplicating(store: StudyStore) -> None:
    store.add_cases([{"case_id": "c1", "inputs": {}, "split": "test"}])
    store.add_generations([_gen("c1", "f1", 1.0)])
    key = ["generation_id", "method"]
    store.upsert("verdicts", [dict(generation_id=1, method="entity_diff", on_target=True, off_target=False,
                                   label="on", evidence={})], key=key)
    store.upsert("verdicts", [dict(generation_id=1, method="entity_diff", on_target=False, off_target=True,
                                   label="off", evidence={"x": 1})], key=key)
    df = store.dataframe("verdicts")
    assert len(df) == 1 and df.label[0] == "off" and df.evidence[0] == {"x": 1}


def test_failed_transaction_writes_nothing(store: StudyStore) -> None:
    store.add_cases([{"case_id": "c1", "inputs": {}, "split": "test"}])
    try:
        with store.transaction() as conn:
            store.insert_ignore("generations", [_gen("c1", "f1", 1.0)], conn=conn)
            raise RuntimeError("crash mid-transaction")
    except RuntimeError:
        pass
    assert store.count("generations") == 0


def test_baselines_join(store: StudyStore) -> None:
    store.add_cases([{"case_id": "c1", "inputs": {}, "split": "test"}])
    store.add_features([{"feature_id": "f1", "source": "sae", "bank_index": 3, "description": "effusion",
                         "target_concepts": ["pleural_effusion"]}])
    store.add_generations([_gen("c1", BASELINE_FEATURE, 0.0, "base"), _gen("c1", "f1", 5.0, "steered")])
    df = store.generations_with_baselines()
    assert list(df.text) == ["steered"] and list(df.baseline_text) == ["base"]
    assert df.target_concepts[0] == ["pleural_effusion"]


def test_sqlite_is_in_wal_mode(tmp_path) -> None:
    with StudyStore.open(tmp_path) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_store_does_not_import_torch() -> None:
    code = "import sys, steering.store, steering; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_typed_repositories_round_trip(store: StudyStore) -> None:
    """The judge cache and the miner's state through typed methods, on both backends."""
    from steering.store.repositories import MiningCheckpoint

    store.cache_judge_response("m", "h1", {"on_target": True})
    store.cache_judge_response("m", "h1", {"on_target": False})  # a newer answer replaces the old
    hashes = [f"x{i}" for i in range(1200)] + ["h1"]  # more ids than one IN (...) chunk
    assert store.cached_judge_responses("m", hashes) == {"h1": {"on_target": False}}
    assert store.cached_judge_responses("other", ["h1"]) == {}

    assert store.mining_checkpoint("k") is None
    store.save_mining_checkpoint(MiningCheckpoint("k", 2, b"\x00\xffstate"), ["d1", "d2"])
    store.save_mining_checkpoint(MiningCheckpoint("k", 3, b"later"), ["d2", "d3"])
    assert store.mining_checkpoint("k") == MiningCheckpoint("k", 3, b"later")
    assert store.mined_documents("k", ["d1", "d3", "d9"]) == {"d1", "d3"}

    ctx = [dict(feature_id="f1", kind="top", rank=r, activation=1.0, doc_id="d", token_index=0, tokens=["a"],
                activations=[1.0]) for r in range(3)]
    stats = [dict(feature_id="f1", corpus_hash="k", n_tokens=5, frequency=0.2, max_activation=1.0, quantiles={})]
    assert store.replace_feature_evidence(["f1"], iter(ctx), stats, chunk=2) == 3
    assert store.replace_feature_evidence(["f1"], iter(ctx[:1]), stats) == 1  # replaced, not added
    assert store.count("feature_contexts") == 1 and store.count("feature_stats") == 1


def test_annotation_repository_round_trip(store: StudyStore) -> None:
    """The annotation app's typed store methods (issue 16), on both backends: queues, status,
    answers stored once with time on task added, foreign items refused, items as records."""
    from steering.store.annotation_repo import QueueEntry

    store.add_cases([{"case_id": "c1", "inputs": {"indication": "cough"}, "split": "test"}])
    store.add_features([{"feature_id": "f1", "source": "sae", "bank_index": 0, "description": "d",
                         "target_concepts": ["effusion"]}])
    store.add_generations([_gen("c1", BASELINE_FEATURE, 0.0, "base"), _gen("c1", "f1", 2.0, "steered"),
                           _gen("c1", "f1", -2.0, "less")])
    ids = store.steered_generation_ids()
    assert len(ids) == 2 and store.feature_ids() == ["f1"]

    def plan(existing):
        assert existing == []
        return [QueueEntry("alice", "change", i, str(g)) for i, g in enumerate(ids)] + [
            QueueEntry("bob", "change", 0, str(ids[0]))]

    assert store.extend_queues("change", plan) == 3
    assert store.extend_queues("change", lambda existing: []) == 0
    assert [(q.item_key, q.double_read) for q in store.queue("alice", "change")] == [(str(ids[0]), True),
                                                                                    (str(ids[1]), False)]
    st = store.queue_status("alice", "change")
    assert (st.total, st.done, st.next.position, st.next.item_key) == (2, 0, 0, str(ids[0]))
    assert store.queue_status("nobody", "change").next is None

    assert not store.record_answer("alice", "change", 0, str(ids[1]), {"label": "on"}, 1.0)  # wrong position
    assert not store.record_answer("carol", "change", 0, str(ids[0]), {"label": "on"}, 1.0)  # no queue
    assert store.record_answer("alice", "change", 0, str(ids[0]), {"label": "on"}, 1.5)
    assert store.record_answer("alice", "change", 0, str(ids[0]), {"label": "off"}, 2.0)  # revised
    reads = store.reads("change")
    assert len(reads) == 1 and reads[0].answers == {"label": "off"} and reads[0].seconds == 3.5
    assert store.rows("annotations")[0]["feature_id"] == "f1"
    st = store.queue_status("alice", "change")
    assert (st.done, st.next.item_key) == (1, str(ids[1]))
    assert store.queued_answer("alice", "change", 0).answers == {"label": "off"}
    assert store.queue_key_at("alice", "change", 1) == str(ids[1]) and store.queue_key_at("alice", "change", 9) is None
    assert store.queue_lengths("change") == {"alice": 2, "bob": 1} and len(store.queued_reads("change")) == 1

    item, labels = store.change_item(ids[0], with_labels=True)
    assert (item.text, item.baseline_text, item.description, item.inputs["indication"]) == ("steered", "base", "d",
                                                                                          "cough")
    assert labels == {} and store.change_item(10**9) == (None, {})
    store.insert_ignore("feature_contexts", [dict(feature_id="f1", kind="top", rank=r, activation=1.0, doc_id="d",
                                                  token_index=0, tokens=["a"], activations=[1.0]) for r in range(3)])
    feature, ctx = store.feature_with_contexts("f1", "top", 2)
    assert feature.target_concepts == ["effusion"] and [c.rank for c in ctx] == [0, 1]
    assert store.feature_with_contexts("nope") == (None, [])


@pytest.mark.postgres
def test_queues_written_on_postgres_are_analyzed_for_the_readers_loop(pg_url) -> None:
    """Queues are written in one go; PostgreSQL's planner must see them (pg_class.reltuples is -1
    before any ANALYZE), or it plans the reader's status read as a nested loop over every answer."""
    from sqlalchemy import inspect, text

    from steering.store.annotation_repo import QueueEntry

    with StudyStore(pg_url) as store:
        store.add_cases([{"case_id": "c1", "inputs": {}, "split": "test"}])
        store.add_generations([_gen("c1", BASELINE_FEATURE, 0.0), _gen("c1", "f1", 2.0)])
        reltuples = text("SELECT reltuples FROM pg_class WHERE relname = 'queue_items'")
        with store.engine.connect() as conn:
            assert conn.execute(reltuples).scalar() == -1
        gid = store.steered_generation_ids()[0]
        assert store.extend_queues("change", lambda _: [QueueEntry(f"r{i}", "change", 0, str(gid))
                                                        for i in range(3)]) == 3
        with store.engine.connect() as conn:
            assert conn.execute(reltuples).scalar() == 3
        indexes = {i["name"]: i["column_names"] for i in inspect(store.engine).get_indexes("annotations")}
        assert indexes["ix_annotation_reader"] == ["annotator", "task", "item_key"]
