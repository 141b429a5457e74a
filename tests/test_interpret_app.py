"""The annotation app's feature-validity task with interpretations: description, F1 (only when not
blinded), top contexts and held-out scoring examples (escaped; never the scorer's predictions)."""

from __future__ import annotations

from annotation_ui.queues import QueueConfig
from annotation_ui.service import AnnotationService
from evaluation.interpret import make_interpreter
from steering.store import StudyStore
from tests.helpers_interpret import add_synthetic_feature


def _study(tmp_path):
    store = StudyStore.open(tmp_path / "run")
    add_synthetic_feature(store, "f0", "pacemaker")
    add_synthetic_feature(store, "f1", "cardiomegaly")  # "normal heart" contexts: hard negatives
    make_interpreter("lexicon").run(store)
    return store


def test_feature_task_shows_description_f1_contexts_and_held_out_examples(tmp_path) -> None:
    store = _study(tmp_path)
    svc = AnnotationService(store, "feature", QueueConfig(overlap=0, seed=0), ["alice"], show_automated=True)
    seen = {}
    v = svc.current("alice")
    for _ in range(2):
        seen[v.ref.split(":")[-1]] = v
        v = svc.skip("alice", v.ref)
    f0 = seen["f0"]
    assert "mentions of pacemaker" in f0.header and 'id="rs-f1"' in f0.header and "1.00" in f0.header
    assert 'id="rs-contexts"' in f0.left and 'id="rs-heldout"' in f0.left
    assert "fires" in f0.left and "does not fire" in f0.left and "prediction" not in f0.left
    assert "shares the description" in seen["f1"].left  # a hard negative is labelled as such
    blinded = AnnotationService(store, "feature", QueueConfig(overlap=0, seed=0), ["bob"])
    b = blinded.current("bob")
    assert "Detection F1" not in b.header and "mentions of" in b.header and 'id="rs-heldout"' in b.left
    store.close()


def test_held_out_text_is_escaped(tmp_path) -> None:
    store = StudyStore.open(tmp_path / "run")
    add_synthetic_feature(store, "f0", "pacemaker", marker="<script>alert(1)</script>")
    make_interpreter("lexicon").run(store)
    v = AnnotationService(store, "feature", QueueConfig(overlap=0), ["alice"], show_automated=True).current("alice")
    assert "<script>" not in v.left and "&lt;script&gt;" in v.left
    store.close()
