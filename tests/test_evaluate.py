"""`radsteer evaluate` end to end on a study store filled by hand (no model needed): the lexicon
extractor, a real loopback OpenAI-protocol judge server, combined verdicts, resumption."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.judge import JudgeConfig, LLMJudge
from evaluation.pipeline import evaluate_run, pending_counts
from protocols.cli import main
from steering.store import BASELINE_FEATURE, StudyStore
from tests.helpers_judge import FakeOpenAIServer

KEY = "sk-evaluate-SECRET-42"
ENV = "RADSTEER_TEST_EVAL_KEY"

NORMAL = "Heart size is normal. The lungs are clear. No pleural effusion or pneumothorax."
EFFUSION = "Moderate right pleural effusion. Heart size is normal. The lungs are otherwise clear."
# (case, feature, alpha, text, expected entity-diff label, judge's answer (on, off))
STEERED = [
    ("c1", "f_eff", 5.0, "Heart size is normal. Small left pleural effusion. No pneumothorax.", "on", (True, False)),
    ("c1", "f_eff", -5.0, "The lungs are clear. Heart size is normal. No pneumothorax or pleural effusion.",
     "none", (False, False)),
    ("c1", "f_eff", 10.0, "The heart is enlarged. The lungs are clear. No pleural effusion or pneumothorax.",
     "off", (False, False)),  # the judge misses the cardiomegaly: a disagreement
    ("c2", "f_eff", -5.0, "No pleural effusion. Heart size is normal. The lungs are clear.", "on", (True, False)),
    ("c2", "f_eff", 5.0, "Moderate right pleural effusion. New right pneumothorax. Heart size is normal.",
     "off", (False, True)),
]
ANSWERS = {text: answer for *_, text, _, answer in STEERED}


def _decide(baseline: str, steered: str, user: str) -> tuple[bool, bool]:
    return ANSWERS.get(steered, (False, False))


def _gen(case: str, feature: str, alpha: float, text: str) -> dict:
    return dict(case_id=case, feature_id=feature, alpha=alpha, settings_hash="greedy", text=text,
                n_tokens=len(text.split()), finish_reason="eos", seconds=0.1)


@pytest.fixture
def study(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ENV, KEY)
    if getattr(request, "param", "sqlite") == "postgres":  # the same study in a PostgreSQL database
        monkeypatch.setenv("RADSTEER_STORE_URL", request.getfixturevalue("pg_url"))
    run_dir = tmp_path / "study"
    with StudyStore.open(run_dir) as store:
        store.add_cases([{"case_id": c, "inputs": {}, "split": "test"} for c in ("c1", "c2", "c3")])
        store.add_features([
            {"feature_id": "f_eff", "source": "sae", "bank_index": 1, "description": "pleural effusion",
             "target_concepts": ["pleural_effusion"]},
            {"feature_id": "f_vague", "source": "sae", "bank_index": 2, "description": "something about lungs",
             "target_concepts": []},
        ])
        store.add_generations(
            [_gen("c1", BASELINE_FEATURE, 0.0, NORMAL), _gen("c2", BASELINE_FEATURE, 0.0, EFFUSION)]
            + [_gen(c, f, a, t) for c, f, a, t, _, _ in STEERED]
            + [_gen("c1", "f_vague", 5.0, "Heart size is normal. The lungs are clear. Small pneumothorax."),
               _gen("c3", "f_eff", 5.0, "Small pleural effusion.")]  # c3 has no baseline
        )
    return run_dir


def _verdicts(run_dir: Path) -> dict[tuple[str, str, float, str], dict]:
    with StudyStore.open(run_dir) as store:
        gens = {g["id"]: g for g in store.rows("generations")}
        return {(gens[v["generation_id"]]["case_id"], gens[v["generation_id"]]["feature_id"],
                 gens[v["generation_id"]]["alpha"], v["method"]): v for v in store.rows("verdicts")}


def _cli(run_dir: Path, srv: FakeOpenAIServer, *extra: str) -> int:
    return main(["evaluate", str(run_dir), "--judge-base-url", srv.base_url, "--judge-model", "judge-m",
                 "--judge-api-key-env", ENV, "--concurrency", "4", "--judge-max-retries", "0", "--no-progress",
                 *extra])


@pytest.mark.parametrize("study", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_evaluate_end_to_end_and_rerun_sends_nothing(study: Path, capsys) -> None:
    with FakeOpenAIServer(api_key=KEY, decide=_decide) as srv:
        assert _cli(study, srv) == 0
        first_requests = srv.requests
        v = _verdicts(study)
        for case, feature, alpha, _, label, answer in STEERED:
            assert v[(case, feature, alpha, "entity_diff")]["label"] == label, (case, alpha)
            assert v[(case, feature, alpha, "entity_diff")]["evidence"]["extractor"] == "lexicon"
            judged = v[(case, feature, alpha, "llm_judge")]
            assert (judged["on_target"], judged["off_target"]) == answer
            assert judged["judge_model"] == "judge-m" and len(judged["prompt_hash"]) == 64
            combined = v[(case, feature, alpha, "combined")]
            assert combined["disagreement"] is (label != judged["label"])
        assert v[("c1", "f_eff", 10.0, "combined")]["label"] == "none"  # "agree": both must see a change
        assert v[("c1", "f_eff", 10.0, "combined")]["evidence"]["differs_on"] == ["off_target"]
        # no target concepts: the entity diff is an error, the combined verdict carries the judge's label
        assert "no target concepts" in v[("c1", "f_vague", 5.0, "entity_diff")]["error"]
        assert v[("c1", "f_vague", 5.0, "combined")]["label"] == "none"
        assert "entity_diff failed" in v[("c1", "f_vague", 5.0, "combined")]["evidence"]["note"]
        # no baseline: errors for both methods and the combined verdict, never a label
        for m in ("entity_diff", "llm_judge", "combined"):
            assert v[("c3", "f_eff", 5.0, m)]["label"] is None and v[("c3", "f_eff", 5.0, m)]["error"]
        assert first_requests == 6  # 5 + the f_vague row; c3 is never sent
        with StudyStore.open(study) as store:
            assert store.count("extractions") == 2 + 5  # baselines + steered rows with targets

        out = capsys.readouterr().out
        assert "disagree" in out and KEY not in out
        # second run: everything is stored, nothing is sent or extracted again
        assert _cli(study, srv) == 0
        assert srv.requests == first_requests
        assert "0 reports newly extracted" in capsys.readouterr().out
        assert _verdicts(study) == v
    blob = b"".join(p.read_bytes() for p in study.iterdir() if p.is_file())
    assert KEY.encode() not in blob


def test_errored_judge_verdicts_are_retried_on_the_next_run(study: Path) -> None:
    with FakeOpenAIServer(decide=_decide) as srv, StudyStore.open(study) as store:
        judge = LLMJudge(JudgeConfig(model="judge-m", base_url=srv.base_url, api_key_env=ENV, concurrency=1,
                                     max_calls=2))
        summary = evaluate_run(store, judge=judge, progress=False)
        assert summary.errors["llm_judge"] == 4 + 1  # 4 budget-exhausted + 1 missing baseline
        budget_errors = [v for v in store.rows("verdicts", method="llm_judge") if "budget" in (v["error"] or "")]
        assert len(budget_errors) == 4
        # the combined verdicts of those carry the entity-diff label for now
        assert pending_counts(store)["llm_judge"] == 5
        judge = LLMJudge(JudgeConfig(model="judge-m", base_url=srv.base_url, api_key_env=ENV))
        summary = evaluate_run(store, judge=judge, progress=False)
        assert srv.requests == 2 + 4  # only the errored ones were asked again
        assert summary.kept["llm_judge"] == 2 and summary.kept["entity_diff"] == 5
        assert pending_counts(store) == {"entity_diff": 2, "llm_judge": 1, "combined": 1}  # c3, f_vague


def test_evaluate_without_judge_and_bad_inputs(study: Path, tmp_path: Path, capsys,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "holds no study.sqlite" in capsys.readouterr().err
    monkeypatch.delenv(ENV)
    assert main(["evaluate", str(study), "--judge-model", "m", "--judge-api-key-env", ENV]) == 2
    assert ENV in capsys.readouterr().err
    assert _verdicts(study) == {}  # failed before writing anything
    assert main(["evaluate", str(study), "--no-progress"]) == 0
    v = _verdicts(study)
    assert not any(m == "llm_judge" for *_, m in v)
    assert v[("c1", "f_eff", 5.0, "combined")]["label"] == "on"
    assert "llm_judge did not run" in v[("c1", "f_eff", 5.0, "combined")]["evidence"]["note"]


def test_judge_settings_come_from_the_frozen_protocol(study: Path, capsys) -> None:
    with FakeOpenAIServer(decide=_decide) as srv:  # keyless server: the protocol says api_key_env: null
        (study / "protocol.yaml").write_text(
            "name: t\nmodel: {kind: demo}\nlayer: 1\nalphas: [5]\ncases: {path: cases.jsonl}\n"
            "features: {source: concept, path: v, items: [{id: f_eff, targets: [pleural_effusion]}]}\n"
            f"evaluation:\n  judge: {{base_url: '{srv.base_url}', model: proto-judge, api_key_env: null,"
            " concurrency: 2}\n")
        assert main(["evaluate", str(study), "--no-progress"]) == 0
        assert srv.requests == 6 and srv.max_in_flight <= 2
    v = _verdicts(study)
    assert v[("c1", "f_eff", 5.0, "llm_judge")]["judge_model"] == "proto-judge"
    assert v[("c1", "f_eff", 5.0, "llm_judge")]["label"] == "on"


def test_label_command_with_a_judge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import json

    monkeypatch.setenv(ENV, KEY)
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"id": i, "baseline": NORMAL if c == "c1" else EFFUSION, "steered": text, "target": "effusion",
             "direction": 1 if a > 0 else -1} for i, (c, _, a, text, _, _) in enumerate(STEERED)]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    with FakeOpenAIServer(api_key=KEY, decide=_decide) as srv:
        assert main(["label", str(pairs), "-o", str(out), "--judge-base-url", srv.base_url, "--judge-model", "m",
                     "--judge-api-key-env", ENV, "--quiet"]) == 0
        assert srv.requests == len(STEERED)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    for row, (*_, label, answer) in zip(got, STEERED, strict=True):
        assert row["method"] == "combined"
        assert row["verdicts"]["entity_diff"]["label"] == label
        assert (row["verdicts"]["llm_judge"]["on_target"], row["verdicts"]["llm_judge"]["off_target"]) == answer
        assert row["evidence"]["rule"] == "agree"
    assert KEY not in out.read_text()
