"""The combined verdict rule: agreement, disagreement flag, and a failed method."""

from __future__ import annotations

import pytest

from evaluation.combine import combine_verdicts
from evaluation.labels import label_of


def _v(on: bool | None, off: bool | None, error: str | None = None, **extra) -> dict:
    label = None if error else label_of(bool(on), bool(off))
    return dict(on_target=on, off_target=off, label=label, error=error, **extra)


@pytest.mark.parametrize(
    ("e", "j", "agree", "judge", "any_", "flag"),
    [
        ((True, False), (True, False), "on", "on", "on", False),
        ((False, False), (False, False), "none", "none", "none", False),
        ((True, True), (True, True), "both", "both", "both", False),
        ((True, False), (False, False), "none", "none", "on", True),
        ((False, False), (True, False), "none", "on", "on", True),
        ((True, True), (True, False), "on", "on", "both", True),
        ((True, False), (False, True), "none", "off", "both", True),
    ],
)
def test_rules_and_disagreement(e, j, agree, judge, any_, flag) -> None:
    for rule, expected in (("agree", agree), ("judge", judge), ("any", any_)):
        out = combine_verdicts(_v(*e), _v(*j, judge_model="m", prompt_hash="h"), rule=rule)
        assert out["label"] == expected, rule
        assert out["disagreement"] is flag and out["error"] is None
        assert out["method"] == "combined" and out["judge_model"] == "m" and out["prompt_hash"] == "h"
        assert out["evidence"]["rule"] == rule
        assert out["evidence"]["entity_diff"]["label"] == label_of(*e)
        assert out["evidence"]["llm_judge"]["label"] == label_of(*j)


def test_a_failed_judge_leaves_the_entity_label_and_says_so() -> None:
    out = combine_verdicts(_v(True, False), _v(None, None, error="timeout: no answer within 60 s"))
    assert out["label"] == "on" and out["on_target"] is True and out["off_target"] is False
    assert out["disagreement"] is None and out["error"] is None
    assert "llm_judge failed (timeout" in out["evidence"]["note"] and "entity_diff's label" in out["evidence"]["note"]


def test_a_missing_entity_diff_leaves_the_judge_label() -> None:
    out = combine_verdicts(None, _v(False, True))
    assert out["label"] == "off" and "entity_diff did not run" in out["evidence"]["note"]
    out = combine_verdicts(_v(True, False), None)
    assert out["label"] == "on" and "llm_judge did not run" in out["evidence"]["note"]


def test_both_failed_is_an_error_never_none() -> None:
    out = combine_verdicts(_v(None, None, error="no targets"), _v(None, None, error="HTTP 500"))
    assert out["label"] is None and out["on_target"] is None
    assert "no targets" in out["error"] and "HTTP 500" in out["error"]
    assert combine_verdicts(None, None)["error"].startswith("no usable verdict")


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="agree"):
        combine_verdicts(None, None, rule="majority")
