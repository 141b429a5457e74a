"""The judge prompt knows the longitudinal and textual families (issue 12): targets reach the
judge with their canonical name, id and category, the system prompt defines the families and
their direction semantics, and a changed prompt version never reuses a cached answer."""

from __future__ import annotations

import json

from evaluation.judge import JudgeConfig, LLMJudge
from evaluation.judge_prompt import PROMPT_VERSION, SYSTEM_PROMPT, JudgeItem, build_messages, describe_target
from tests.helpers_judge import FakeOpenAIServer


def test_targets_are_described_with_their_family() -> None:
    assert describe_target("worsening") == "worsening [worsening, longitudinal]"
    assert describe_target("comparison with prior") == "comparison with prior [comparison, longitudinal]"
    assert describe_target("follow-up recommendation") == "recommendation [recommendation, textual]"
    assert describe_target("effusions") == "pleural effusion [pleural_effusion, finding]"
    assert describe_target("not a concept at all") == "not a concept at all"  # passed on as written


def test_the_system_prompt_defines_every_family_and_its_direction() -> None:
    for word in ("longitudinal", "textual", "comparison", "worsening", "improvement", "stability",
                 "new_finding", "resolution", "recommendation", "communication", "technical_limitation",
                 "measurement", "gains such a statement", "loses or weakens it", "borderline"):
        assert word in SYSTEM_PROMPT, word
    assert PROMPT_VERSION == "judge-v2"


def test_a_real_server_receives_the_family_of_each_target(monkeypatch) -> None:
    """The judge on the wire: the server answers on-target only when the prompt says the target
    is a longitudinal concept (so the label depends on what was actually sent)."""
    def respond(body: dict, user: str) -> str:
        on = "[stability, longitudinal]" in user
        return json.dumps({"on_target_change": on, "off_target_change": False, "on_target_evidence": "",
                           "off_target_evidence": "", "clinically_coherent": True, "rationale": user[:40]})

    item = JudgeItem(key=1, baseline="Small left effusion.", steered="Small left effusion. No interval change.",
                     direction=+1, targets=["unchanged"], description="stability statements")
    with FakeOpenAIServer(respond=respond) as server:
        judge = LLMJudge(JudgeConfig(model="judge-test", base_url=server.base_url, api_key_env=None))
        (verdict,) = judge.judge_many([item])
        sent = server.bodies[-1]["messages"][1]["content"]
    assert "Target concept(s): stability [stability, longitudinal]" in sent
    assert verdict.error is None and verdict.label == "on"
    assert build_messages(item)[1]["content"] == sent
