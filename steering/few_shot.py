"""A few-shot completion prompt that makes a small general model write a findings section.

A 135M-parameter chat model asked for "the findings section" answers *about* the report
("The findings section … contains the following information: 1. **Indication** …"). Shown a
few example studies as plain text — `INDICATION:` / `COMPARISON:` / optional `PRIOR REPORT:` /
`FINDINGS:` — and then the case's own header ending in `FINDINGS:`, it continues with findings
sentences on one line and, once done, starts the next example's header after a blank line: hence
the stop sequence below, which ends the row at its first newline (`generation.stop` in a protocol).

The examples mix normal and abnormal studies (effusion, cardiomegaly, oedema, a device, with
negated pneumothorax and consolidation) so that the model has seen the vocabulary without every
case being pushed towards one finding. They are few and short because every steered row
re-reads them: with `positions: all` the prompt is steered too, so no prefix can be shared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# (indication, comparison, prior report or None, findings)
EXAMPLES: tuple[tuple[str, str, str | None, str], ...] = (
    ("Cough.", "None.", None,
     "The lungs are clear. The heart size is normal. No pleural effusion or pneumothorax."),
    ("Pacemaker check.", "None.", None,
     "A left-sided pacemaker is present. The heart is mildly enlarged. There is a small right pleural effusion."),
    ("Heart failure.", "Chest radiograph from two days ago.", "Moderate cardiomegaly.",
     "Moderate cardiomegaly is unchanged. Mild pulmonary edema. No focal consolidation or pneumothorax."),
)

# A findings section is one line: it ends at the newline before the blank line and the next header
# (steered rows sometimes start a new header, "FINDINGS:", after a single newline).
STOP = ("\n",)


def _header(indication: Any, comparison: Any, prior: Any) -> str:
    lines = [f"INDICATION: {indication or 'N/A'}", f"COMPARISON: {comparison or 'N/A'}"]
    if prior:
        lines.append(f"PRIOR REPORT: {prior}")
    return "\n".join(lines) + "\nFINDINGS:"


def few_shot_prompt(case: Mapping[str, Any]) -> str:
    """The examples, then the case's header ending in `FINDINGS:` (the model continues it)."""
    blocks = [f"{_header(ind, comp, prior)} {findings}" for ind, comp, prior, findings in EXAMPLES]
    blocks.append(_header(case.get("indication"), case.get("comparison"), case.get("prior_report")))
    return "\n\n".join(blocks)
