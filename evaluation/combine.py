"""The combined verdict: entity diff and LLM judge side by side, their agreement, and a flag.

Rule (default "agree", the conservative one): a change is claimed only when both methods see
it — `on_target = entity.on_target AND judge.on_target`, and likewise `off_target`; the label
follows from the two booleans. `disagreement` is True whenever the two methods' labels differ,
so radiologists review exactly the cases where the automated methods could not settle it.
Other rules, for sensitivity analyses: "judge" (the judge's label; the entity diff only raises
the flag) and "any" (a change is claimed when either method sees it).

When one method failed or did not run, the combined verdict carries the other's label, says so
in its evidence, and leaves `disagreement` NULL (agreement is unknown, not "agreed"). When both
failed, the combined verdict is itself an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from evaluation.labels import label_of

CombineRule = Literal["agree", "judge", "any"]
RULES: tuple[str, ...] = ("agree", "judge", "any")


def _usable(v: Mapping[str, Any] | None) -> bool:
    return v is not None and not v.get("error") and v.get("on_target") is not None and v.get("off_target") is not None


def _summary(v: Mapping[str, Any] | None) -> dict[str, Any]:
    if v is None:
        return {"status": "not run"}
    if not _usable(v):
        return {"status": "error", "error": v.get("error") or "verdict has no labels"}
    return {"status": "ok", "label": v.get("label") or label_of(bool(v["on_target"]), bool(v["off_target"])),
            "on_target": bool(v["on_target"]), "off_target": bool(v["off_target"])}


def combine_verdicts(
    entity: Mapping[str, Any] | None, judge: Mapping[str, Any] | None, rule: CombineRule = "agree"
) -> dict[str, Any]:
    """Fields of the "combined" verdict row (no generation_id) from the two methods' rows."""
    if rule not in RULES:
        raise ValueError(f"unknown combine rule {rule!r}; choose one of {', '.join(RULES)}")
    e, j = _summary(entity), _summary(judge)
    evidence: dict[str, Any] = {"rule": rule, "entity_diff": e, "llm_judge": j}
    row: dict[str, Any] = dict(method="combined", judge_model=None, prompt_hash=None, evidence=evidence)
    if judge is not None:
        row["judge_model"], row["prompt_hash"] = judge.get("judge_model"), judge.get("prompt_hash")

    if e["status"] != "ok" and j["status"] != "ok":
        why = (f"both methods {_why(e)}" if _why(e) == _why(j)
               else f"entity_diff {_why(e)}; llm_judge {_why(j)}")
        return {**row, "on_target": None, "off_target": None, "label": None, "disagreement": None,
                "error": f"no usable verdict: {why}"}
    if e["status"] != "ok" or j["status"] != "ok":
        used, other, missing = ("llm_judge", j, e) if j["status"] == "ok" else ("entity_diff", e, j)
        unused = "entity_diff" if used == "llm_judge" else "llm_judge"
        evidence["note"] = f"{unused} {_why(missing)}; the combined verdict carries {used}'s label"
        on, off = other["on_target"], other["off_target"]
        return {**row, "on_target": on, "off_target": off, "label": label_of(on, off), "disagreement": None,
                "error": None}

    if rule == "agree":
        on, off = e["on_target"] and j["on_target"], e["off_target"] and j["off_target"]
    elif rule == "any":
        on, off = e["on_target"] or j["on_target"], e["off_target"] or j["off_target"]
    else:  # "judge"
        on, off = j["on_target"], j["off_target"]
    disagreement = e["label"] != j["label"]
    if disagreement:
        evidence["differs_on"] = [f for f in ("on_target", "off_target") if e[f] != j[f]]
    return {**row, "on_target": on, "off_target": off, "label": label_of(on, off),
            "disagreement": disagreement, "error": None}


def _why(summary: Mapping[str, Any]) -> str:
    return "did not run" if summary["status"] == "not run" else f"failed ({summary['error']})"
