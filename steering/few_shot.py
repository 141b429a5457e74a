"""A few-shot completion prompt that makes a small general model write a findings section.

A 135M-parameter chat model asked for "the findings section" answers *about* the report
("The findings section … contains the following information: 1. **Indication** …"). Shown a
few example studies as plain text — `INDICATION:` / `COMPARISON:` / optional `PRIOR REPORT:` /
`FINDINGS:` — and then the case's own header ending in `FINDINGS:`, it continues with findings
sentences on one line and, once done, starts the next example's header after a blank line: hence
the stop sequence below, which ends the row at its first newline (`generation.stop` in a protocol).

The case's own `TECHNIQUE:` line ("PA and lateral chest radiographs.") comes last, right before
`FINDINGS:`: without it a quarter of the demo's baselines answered the indication instead of
describing the chest ("No other symptoms." after "Sudden onset dyspnoea"); with it all 16 describe
the chest (benchmarks/demo_prompt.py, docs/benchmarks.md). The examples carry no technique line,
which keeps the prompt short (it helped as much as giving every example one, for 36 fewer tokens).

The examples mix normal and abnormal studies (effusion, cardiomegaly, oedema, a device, with
negated pneumothorax and consolidation) so that the model has seen the vocabulary without every
case being pushed towards one finding. They are few and short because every steered row
re-reads them: with `positions: all` the prompt is steered too, so no prefix can be shared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The header's sections, in order: (case key, label, always shown). An absent section that is always
# shown reads "N/A" (as MAIRA-2's processor writes it); the others are left out.
SECTIONS: tuple[tuple[str, str, bool], ...] = (
    ("indication", "INDICATION", True),
    ("comparison", "COMPARISON", True),
    ("prior_report", "PRIOR REPORT", False),
    ("technique", "TECHNIQUE", False),  # the case's own ("PA chest radiograph."), right before FINDINGS:
)

# Example studies: the header's inputs and their findings.
EXAMPLES: tuple[dict[str, str], ...] = (
    {"indication": "Cough.", "comparison": "None.",
     "findings": "The lungs are clear. The heart size is normal. No pleural effusion or pneumothorax."},
    {"indication": "Pacemaker check.", "comparison": "None.",
     "findings": "A left-sided pacemaker is present. The heart is mildly enlarged. There is a small right pleural "
                 "effusion."},
    {"indication": "Heart failure.", "comparison": "Chest radiograph from two days ago.",
     "prior_report": "Moderate cardiomegaly.",
     "findings": "Moderate cardiomegaly is unchanged. Mild pulmonary edema. No focal consolidation or pneumothorax."},
)

# A findings section is one line: it ends at the newline before the blank line and the next header
# (steered rows sometimes start a new header, "FINDINGS:", after a single newline).
STOP = ("\n",)


def _header(case: Mapping[str, Any]) -> str:
    lines = [f"{label}: {case.get(key) or 'N/A'}" for key, label, always in SECTIONS if always or case.get(key)]
    return "\n".join(lines) + "\nFINDINGS:"


def few_shot_prompt(case: Mapping[str, Any]) -> str:
    """The examples, then the case's header ending in `FINDINGS:` (the model continues it)."""
    blocks = [f"{_header(ex)} {ex['findings']}" for ex in EXAMPLES]
    blocks.append(_header(case))
    return "\n\n".join(blocks)
