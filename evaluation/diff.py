"""The entity diff between a baseline and a steered report.

Why per concept and not per mention: a report that says "small left effusion" in the findings
and again in the impression has one effusion, and "left ... and right effusion" is a bilateral
one. Each report is first summarised into one state per observation concept (assertion,
laterality, severity, temporal change), then the two summaries are compared. Anatomy, word order
and paraphrase ("effusion" / "pleural fluid", "small" / "mild", "stable" / "unchanged") are not
changes; an observation that is stated absent is the same as one not mentioned.

Entities from any backend work: text that the lexicon can normalise gets its concept id, other
text is compared lower-cased, and words that are not findings in any backend ("clear",
"normal", "unremarkable") are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from evaluation.entities import Entity
from evaluation.lexicon import ASSERTION_RANK, LATERALITY_SETS, Lexicon, load_lexicon

# longitudinal_changed: a finding's change attribute (new / increased / decreased / unchanged /
# resolved) differs — its own kind of change, because it is what longitudinal targets move
ChangeType = Literal["added", "removed", "assertion_changed", "modifier_changed", "longitudinal_changed"]
CHANGE_TYPES: tuple[str, ...] = ("added", "removed", "assertion_changed", "modifier_changed", "longitudinal_changed")
MODIFIERS: tuple[str, ...] = ("laterality", "severity", "change")


@dataclass(frozen=True)
class ConceptState:
    """One report's summary of one observation concept."""

    concept: str  # concept id, or the lower-cased text when it does not normalise
    name: str
    category: str  # device / finding / longitudinal / textual / other (not in the lexicon)
    assertion: str
    laterality: str | None = None  # left / right / bilateral (None: not stated)
    severity: str | None = None
    severity_rank: int | None = None
    change: str | None = None  # new / increased / decreased / unchanged / resolved (None: not stated)
    change_rank: int = 0
    texts: tuple[str, ...] = ()

    @property
    def mentioned_present(self) -> bool:
        return self.assertion != "absent"


@dataclass(frozen=True)
class DiffItem:
    """One clinically meaningful difference of one observation concept."""

    change: ChangeType
    concept: str  # the concept as the steered report names it (baseline's for "removed")
    name: str
    category: str
    before: str | None  # assertion (added/removed/assertion_changed) or modifier value
    after: str | None
    modifier: str | None = None  # laterality / severity / change for modifier_changed / longitudinal_changed
    movement: int = 0  # +1 toward more of the concept, -1 toward less, 0 neither (e.g. left -> right)
    related_concept: str | None = None  # the baseline's more / less specific concept ("pacemaker" vs "cardiac device")
    baseline_text: tuple[str, ...] = ()
    steered_text: tuple[str, ...] = ()
    change_before: str | None = None  # the finding's change attribute in each report (longitudinal targets)
    change_after: str | None = None

    @property
    def concepts(self) -> tuple[str, ...]:
        return (self.concept,) if self.related_concept is None else (self.concept, self.related_concept)

    def describe(self) -> str:
        """Compact form used in summaries and tests: "added pleural_effusion present",
        "assertion pneumothorax present>absent", "severity pleural_effusion small>large"."""
        if self.change == "added":
            return f"added {self.concept} {self.after}"
        if self.change == "removed":
            return f"removed {self.concept} {self.before}"
        head = "assertion" if self.change == "assertion_changed" else str(self.modifier)
        return f"{head} {self.concept} {self.before}>{self.after}"

    def to_json(self) -> dict[str, Any]:
        # by hand rather than dataclasses.asdict, which deep-copies and was most of labelling's time
        d: dict[str, Any] = {f: getattr(self, f) for f in _ITEM_FIELDS}
        d["baseline_text"] = list(self.baseline_text)
        d["steered_text"] = list(self.steered_text)
        d["description"] = self.describe()
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DiffItem:
        d = {k: v for k, v in data.items() if k != "description"}
        d["baseline_text"] = tuple(d.get("baseline_text") or ())
        d["steered_text"] = tuple(d.get("steered_text") or ())
        return cls(**d)


_ITEM_FIELDS = tuple(f.name for f in fields(DiffItem))


@dataclass(frozen=True)
class EntityDiff:
    """The diff of two reports; truthy when there is a clinically meaningful change."""

    items: tuple[DiffItem, ...]
    baseline: dict[str, ConceptState] = field(default_factory=dict)
    steered: dict[str, ConceptState] = field(default_factory=dict)

    @property
    def meaningful(self) -> bool:
        """Any observation added, removed, or with a changed assertion or modifier."""
        return bool(self.items)

    def __bool__(self) -> bool:
        return self.meaningful

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def by_type(self, change: str) -> list[DiffItem]:
        return [i for i in self.items if i.change == change]

    def describe(self) -> list[str]:
        return [i.describe() for i in self.items]

    def summary(self) -> str:
        """One line for logs and reports."""
        if not self.items:
            return "no clinically meaningful change"
        counts = ", ".join(f"{len(self.by_type(t))} {t.replace('_', ' ')}" for t in CHANGE_TYPES if self.by_type(t))
        return f"{len(self.items)} change(s) ({counts}): " + "; ".join(self.describe())

    def to_json(self) -> dict[str, Any]:
        return {"meaningful": self.meaningful, "summary": self.summary(),
                "items": [i.to_json() for i in self.items]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EntityDiff:
        return cls(tuple(DiffItem.from_json(d) for d in data.get("items", [])))


# ------------------------------------------------------------------ summarising one report

def _lat_string(sides: frozenset[str]) -> str | None:
    if not sides:
        return None
    return "bilateral" if len(sides) == 2 else next(iter(sides))


def summarise(entities: Iterable[Entity], lexicon: Lexicon | None = None, *,
              ignore_unnormalised: bool = False) -> dict[str, ConceptState]:
    """One ConceptState per observation concept of a report (anatomy entities are skipped)."""
    lex = lexicon or load_lexicon()
    groups: dict[str, list[Entity]] = {}
    for e in entities:
        if e.kind != "observation":
            continue
        concept = e.concept if e.concept in lex.concepts else None
        if concept is None:
            concept = lex.concept_for_text(e.text)
        if concept is None:
            key = " ".join(e.text.lower().split())
            if ignore_unnormalised or not key or key in lex.non_findings:
                continue
        groups.setdefault(concept or key, []).append(e)
    resolved = "resolved" if "resolved" in lex.change_rank else None
    out: dict[str, ConceptState] = {}
    for key, ents in groups.items():
        c = lex.concepts.get(key)
        assertion = max((e.assertion for e in ents), key=lambda a: ASSERTION_RANK.get(a, 2))
        live = [e for e in ents if e.assertion != "absent"]
        sides: frozenset[str] = frozenset()
        severity, sev_rank, change, change_rank = None, None, None, 0
        for e in live:
            mods = e.modifiers or {}
            lat = lex.normalise_modifier("laterality", mods["laterality"]) if mods.get("laterality") else None
            if lat:
                sides |= LATERALITY_SETS[lat]
            sev = lex.normalise_modifier("severity", mods["severity"]) if mods.get("severity") else None
            if sev and (sev_rank is None or lex.severity_rank[sev] > sev_rank):
                severity, sev_rank = sev, lex.severity_rank[sev]
            chg = lex.normalise_modifier("change", mods["change"]) if mods.get("change") else None
            if chg and (change is None or abs(lex.change_rank[chg]) > abs(change_rank)):
                change, change_rank = chg, lex.change_rank[chg]
        if not live and resolved and any((e.modifiers or {}).get("change") == resolved for e in ents):
            change, change_rank = resolved, lex.change_rank[resolved]  # "the effusion has resolved"
        out[key] = ConceptState(key, c.name if c else key, c.kind if c else "other", assertion,
                                _lat_string(sides), severity, sev_rank, change, change_rank,
                                tuple(dict.fromkeys(e.text for e in ents)))
    stable = out.get("stability")
    if stable is not None and stable.mentioned_present and "unchanged" in lex.change_rank:
        # "No interval change." says every finding it does not qualify otherwise is unchanged
        for key, st in out.items():
            if st.category not in ("longitudinal", "textual") and st.mentioned_present and st.change is None:
                out[key] = replace(st, change="unchanged", change_rank=lex.change_rank["unchanged"])
    return out


# ------------------------------------------------------------------ comparing two reports

def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _lat_movement(before: str, after: str) -> int:
    a, b = LATERALITY_SETS[before], LATERALITY_SETS[after]
    return 1 if b > a else -1 if b < a else 0


def _compare(b: ConceptState, s: ConceptState, related: str | None) -> list[DiffItem]:
    base = dict(concept=s.concept, name=s.name, category=s.category, related_concept=related,
                baseline_text=b.texts, steered_text=s.texts, change_before=b.change, change_after=s.change)
    items: list[DiffItem] = []
    if b.assertion != s.assertion:
        move = _sign(ASSERTION_RANK[s.assertion] - ASSERTION_RANK[b.assertion])
        items.append(DiffItem("assertion_changed", before=b.assertion, after=s.assertion, movement=move, **base))
    if b.mentioned_present and s.mentioned_present:
        if b.laterality and s.laterality and b.laterality != s.laterality:
            items.append(DiffItem("modifier_changed", before=b.laterality, after=s.laterality, modifier="laterality",
                                  movement=_lat_movement(b.laterality, s.laterality), **base))
        if b.severity_rank is not None and s.severity_rank is not None and b.severity_rank != s.severity_rank:
            items.append(DiffItem("modifier_changed", before=b.severity, after=s.severity, modifier="severity",
                                  movement=_sign(s.severity_rank - b.severity_rank), **base))
    # "unchanged" and unstated are equal (saying a finding is unchanged adds no clinical content);
    # any other difference of the change attribute is a change
    if (b.change or "unchanged") != (s.change or "unchanged") and (
            (b.mentioned_present and s.mentioned_present)
            or (not items and not b.mentioned_present and not s.mentioned_present)):  # "no X" / "X has resolved"
        items.append(DiffItem("longitudinal_changed", before=b.change or "unstated", after=s.change or "unstated",
                              modifier="change", movement=_sign(s.change_rank - b.change_rank)
                              if b.mentioned_present else 0, **base))
    return items


def _longitudinal(states: dict[str, ConceptState], lex: Lexicon) -> set[str]:
    """The longitudinal concepts a report expresses through its findings' change attributes
    (and "comparison", implied by any longitudinal statement)."""
    out: set[str] = set()
    for st in states.values():
        if st.category == "longitudinal" and st.mentioned_present:
            out.add("comparison")
        elif st.change and (st.mentioned_present or st.change == "resolved"):
            out.update(lex.longitudinal_for_change(st.change))
    return out


def _explained(b: ConceptState | None, s: ConceptState | None, derived_b: set[str], derived_s: set[str]) -> bool:
    """A longitudinal statement present in one report only, where the other report (or the same
    one) says the same through a finding's change attribute: the finding's items carry the change."""
    key = (b or s).concept  # type: ignore[union-attr]
    has_b = bool(b and b.mentioned_present) or key in derived_b
    has_s = bool(s and s.mentioned_present) or key in derived_s
    if has_b == has_s:
        return b is None or s is None
    state = b if has_b else s
    return state is None or not state.mentioned_present


def diff_states(baseline: dict[str, ConceptState], steered: dict[str, ConceptState],
                lexicon: Lexicon | None = None) -> EntityDiff:
    """Compare two report summaries (see `summarise`)."""
    lex = lexicon or load_lexicon()
    pairs: list[tuple[ConceptState | None, ConceptState | None, str | None]] = []
    only_b = [k for k in baseline if k not in steered]
    only_s = [k for k in steered if k not in baseline]
    # a more or less specific name of the same thing is not a change ("pacemaker" / "cardiac device")
    for ks in list(only_s):
        for kb in only_b:
            if ks in lex.concepts and kb in lex.concepts and lex.related(ks, kb):
                pairs.append((baseline[kb], steered[ks], kb))
                only_b.remove(kb)
                only_s.remove(ks)
                break
    for k in baseline:
        if k in steered:
            pairs.append((baseline[k], steered[k], None))
        elif k in only_b:
            pairs.append((baseline[k], None, None))
    pairs.extend((None, steered[k], None) for k in only_s)

    derived_b, derived_s = _longitudinal(baseline, lex), _longitudinal(steered, lex)
    items: list[DiffItem] = []
    for b, s, related in pairs:
        state = b or s
        if state is not None and state.category == "longitudinal" and _explained(b, s, derived_b, derived_s):
            continue
        if b is not None and s is not None:
            items.extend(_compare(b, s, related))
        elif b is not None and b.mentioned_present:
            items.append(DiffItem("removed", b.concept, b.name, b.category, b.assertion, None,
                                  movement=-1, baseline_text=b.texts, change_before=b.change))
        elif s is not None and s.mentioned_present:
            items.append(DiffItem("added", s.concept, s.name, s.category, None, s.assertion,
                                  movement=1, steered_text=s.texts, change_after=s.change))
    return EntityDiff(tuple(items), baseline, steered)


def diff_entities(baseline: Sequence[Entity], steered: Sequence[Entity], lexicon: Lexicon | None = None, *,
                  ignore_unnormalised: bool = False) -> EntityDiff:
    """Added, removed, assertion-changed and modifier-changed observations from baseline to steered."""
    lex = lexicon or load_lexicon()
    return diff_states(summarise(baseline, lex, ignore_unnormalised=ignore_unnormalised),
                       summarise(steered, lex, ignore_unnormalised=ignore_unnormalised), lex)


def diff_reports(baseline: str, steered: str, extractor: Any = None) -> EntityDiff:
    """Convenience: extract both reports (lexicon backend by default) and diff them."""
    if extractor is None:
        from evaluation.lexicon import LexiconExtractor

        extractor = LexiconExtractor()
    b, s = extractor.extract([baseline, steered])
    return diff_entities(b, s)
