"""How `study_v0.sqlite` was made: a study written by the schema of the first build (before migrations).

Run once at commit a6d9518 (`python tests/data/make_study_v0.py`); the committed file is the fixture.
Running it again on a later schema would make a different file, so the migration test never does.
"""

from __future__ import annotations

import sys
from pathlib import Path

from steering.store import BASELINE_FEATURE, StudyStore


def main(out: Path) -> None:
    store = StudyStore(f"sqlite:///{out}")
    store.add_cases([{"case_id": "c1", "inputs": {"indication": "Dyspnoea"}, "split": "test"},
                     {"case_id": "c2", "inputs": {"indication": "Cough"}, "split": "tune"}])
    store.add_features([{"feature_id": "f1", "source": "concept", "bank_index": 0, "description": "effusion",
                         "target_concepts": ["pleural_effusion"], "interpretability": 0.5}])
    gens = []
    for case in ("c1", "c2"):
        for feat, alpha, text in ((BASELINE_FEATURE, 0.0, "No effusion."), ("f1", 0.6, "Small effusion."),
                                  ("f1", -0.6, "Clear lungs.")):
            gens.append(dict(case_id=case, feature_id=feat, alpha=alpha, settings_hash="s0",
                             text=f"{case}: {text}", n_tokens=4, finish_reason="eos", seconds=0.1))
    store.add_generations(gens)
    store.insert_ignore("extractions", [{"generation_id": 2, "backend": "lexicon",
                                         "entities": [{"concept": "pleural_effusion", "assertion": "present"}]}])
    store.insert_ignore("verdicts", [{"generation_id": 2, "method": "entity_diff", "on_target": True,
                                      "off_target": False, "label": "on", "evidence": {"added": ["x"]}}])
    store.insert_ignore("judge_cache", [{"model": "m", "prompt_hash": "h" * 64, "response": {"on_target": True}}])
    store.insert_ignore("queue_items", [{"annotator": "alice", "task": "change", "position": 0,
                                         "item_key": "2", "double_read": False, "seed": 0}])
    store.insert_ignore("annotations", [{"task": "change", "item_key": "2", "generation_id": 2,
                                         "feature_id": "f1", "annotator": "alice",
                                         "answers": {"label": "on"}, "seconds": 3.5, "shown_order": 0}])
    store.insert_ignore("feature_contexts", [{"feature_id": "f1", "kind": "top", "rank": 0, "activation": 2.0,
                                              "doc_id": "d1", "token_index": 3, "tokens": ["a", "b"],
                                              "activations": [0.0, 2.0], "center": 1}])
    store.insert_ignore("feature_stats", [{"feature_id": "f1", "corpus_hash": "k", "n_tokens": 10,
                                           "frequency": 0.1, "max_activation": 2.0, "quantiles": [0.0, 1.0]}])
    store.insert_ignore("mining_progress", [{"corpus_hash": "k", "doc_id": "d1"}])
    store.insert_ignore("mining_state", [{"corpus_hash": "k", "n_docs": 1, "state": b"\x00\x01"}])
    store.insert_ignore("activation_checks", [{"generation_id": 2, "feature_id": "f1", "steered_activation": 1.0,
                                               "baseline_activation": 0.1, "steered_max": 2.0,
                                               "baseline_max": 0.2}])
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("study_v0.sqlite"))
