"""Target matching: which differences of an entity diff are on-target, which off-target.

A feature's target concepts (from the protocol, resolved through the lexicon) and the steering
direction decide. With +α a target concept moving toward presence is on-target (added,
absent → uncertain → present, higher severity, wider laterality, "new" / "increased"); with −α
the opposite (removed, negated, made uncertain, milder, "decreased"). Every other clinically
meaningful difference is off-target — including a target concept that moves against the
direction, or sideways (left → right) without also moving with it.

Longitudinal targets (comparison, worsening, improvement, stability, new_finding, resolution)
move with their statements ("No interval change.") and with the change attribute of any finding:
a finding that gains "increased" moves toward `worsening` (and `comparison`), one that loses it
moves away; the finding's other changes accompany that move. Textual targets (recommendation,
communication, technical_limitation, measurement) move with their statements. Rewording with
the same meaning is no diff at all, hence "none".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from evaluation.diff import DiffItem, EntityDiff
from evaluation.labels import label_of
from evaluation.lexicon import Lexicon, load_lexicon, resolve_concepts
from steering.errors import RadsteerError

__all__ = ["TargetMatch", "match_targets", "resolve_concepts", "parse_direction"]


def parse_direction(value: Any) -> int:
    """+1 / −1 from 1, -1, "+1", "-1", "+", "-" (anything else is an error)."""
    if isinstance(value, bool):
        raise RadsteerError(f"direction must be +1 or -1, got {value!r}")
    if isinstance(value, (int, float)) and value in (1, -1):
        return int(value)
    if isinstance(value, str) and value.strip() in ("+1", "1", "+", "-1", "-", "\u22121"):
        return -1 if value.strip() in ("-1", "-", "\u22121") else 1
    raise RadsteerError(f"direction must be +1 or -1, got {value!r}")


@dataclass(frozen=True)
class TargetMatch:
    """The entity-diff verdict of one steered report."""

    on_target: bool
    off_target: bool
    label: str
    targets: tuple[str, ...]
    direction: int
    on_items: tuple[tuple[DiffItem, str], ...] = ()  # (diff, why it counts as on-target)
    off_items: tuple[tuple[DiffItem, str], ...] = ()
    diff: EntityDiff | None = field(default=None, compare=False)

    @property
    def evidence(self) -> dict[str, Any]:
        """JSON evidence: which diffs counted as what, and why."""
        return {
            "targets": list(self.targets),
            "direction": self.direction,
            "on_target": [{**item.to_json(), "reason": why} for item, why in self.on_items],
            "off_target": [{**item.to_json(), "reason": why} for item, why in self.off_items],
            "diff_summary": self.diff.summary() if self.diff is not None else None,
        }

    def to_json(self) -> dict[str, Any]:
        return {"on_target": self.on_target, "off_target": self.off_target, "label": self.label,
                "evidence": self.evidence}

    def summary(self) -> str:
        sign = "+" if self.direction > 0 else "-"
        return (f"label={self.label} (targets {', '.join(self.targets)}, direction {sign}): "
                f"{len(self.on_items)} on-target, {len(self.off_items)} off-target diff(s)")


def _is_target(item: DiffItem, targets: Sequence[str], lex: Lexicon) -> bool:
    return any(c == t or t in lex.ancestors(c) for c in item.concepts for t in targets)


def _longitudinal_move(item: DiffItem, targets: Sequence[str], lex: Lexicon) -> int:
    """+1 when the item's finding gains a change attribute that expresses a longitudinal target,
    -1 when it loses one, 0 otherwise."""
    before = set(lex.longitudinal_for_change(item.change_before)) & set(targets)
    after = set(lex.longitudinal_for_change(item.change_after)) & set(targets)
    return 1 if after - before else -1 if before - after else 0


def match_targets(diff: EntityDiff, targets: str | Iterable[str], direction: int,
                  lexicon: Lexicon | None = None) -> TargetMatch:
    """Split a diff into on-target and off-target changes for `targets` steered in `direction`.

    `targets` are concept ids, names or synonyms (a diff on a more specific concept counts for
    its parent: target "cardiac device" covers "pacemaker").
    """
    lex = lexicon or load_lexicon()
    direction = parse_direction(direction)
    target_ids = resolve_concepts(targets, lex)
    longitudinal = [t for t in target_ids if t in lex.concepts and lex.concepts[t].kind == "longitudinal"]
    on: list[tuple[DiffItem, str]] = []
    off: list[tuple[DiffItem, str]] = []
    groups: dict[str, list[tuple[DiffItem, int | None]]] = {}  # concept -> (item, movement; None: unrelated)
    for item in diff.items:
        if _is_target(item, target_ids, lex):
            groups.setdefault(item.concept, []).append((item, item.movement))
        elif longitudinal and (move := _longitudinal_move(item, longitudinal, lex)):
            groups.setdefault(item.concept, []).append((item, move))
        else:
            groups.setdefault(item.concept, []).append((item, None))
    word = "toward" if direction > 0 else "away from"
    for items in groups.values():
        moved_with = any(m == direction for _, m in items)
        for i, m in items:
            if m is None and not (moved_with and longitudinal):
                off.append((i, "not a target concept"))
            elif m == direction:
                why = (f"target concept moved {word} presence" if _is_target(i, target_ids, lex)
                       else f"the finding's change attribute moved {word} the longitudinal target")
                on.append((i, f"{why} (steering direction {direction:+d})"))
            elif m == -direction:
                off.append((i, f"target concept moved against the steering direction ({direction:+d})"))
            elif moved_with:
                on.append((i, "accompanies an on-target change of the same concept"))
            else:
                off.append((i, "target concept changed without moving in the steering direction"))
    return TargetMatch(bool(on), bool(off), label_of(bool(on), bool(off)), tuple(target_ids), direction,
                       tuple(on), tuple(off), diff)
