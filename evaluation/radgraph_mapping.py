"""Map the radgraph package's annotation dicts onto the common Entity schema.

Pure Python (no torch) so it can be tested on hand-written dicts. RadGraph's output per report:
``{"text": "tok tok ...", "entities": {"1": {"tokens", "label", "start_ix", "end_ix",
"relations": [[relation, target_key], ...]}}}`` where labels are "Observation::definitely
present|absent", "Observation::uncertain", "Anatomy::definitely present" (RadGraph-XL adds
"Observation::measurement::..."; the 2021 release used OBS-DP / OBS-DA / OBS-U / ANAT-DP) and
relations are ``modify``, ``located_at`` and ``suggestive_of`` from the entity that carries them.

Following the radgraph package's own reading (`radgpt.get_radgraph_processed_annotations`):
an entity that *modifies* another is a qualifier, not a finding of its own. Qualifiers that
are laterality or severity words become the head's ``modifiers``; a head observation is absent
if anything in its modifier chain is absent, else uncertain if anything is uncertain. An
observation's ``anatomy`` is the phrase of its ``located_at`` targets (with their own
modifiers). ``suggestive_of`` is not mapped.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evaluation.entities import Assertion, Entity, EntityKind
from evaluation.vocabulary import load_vocabulary

Normaliser = Callable[[str], "str | None"]  # phrase -> lexicon concept id
ModifierNormaliser = Callable[[str, str], "str | None"]  # (key, words) -> canonical value
MODIFIER_KEYS = ("laterality", "severity", "change")


@functools.lru_cache(maxsize=1)
def modifier_tables() -> dict[str, dict[str, str]]:
    """One-word modifier tables (laterality, severity, change) from the concept vocabulary — the
    same source the lexicon reads reports with — used when no modifier normaliser is given."""
    vocab = load_vocabulary()
    tables = {key: {" ".join(toks): value for toks, value in table.items() if len(toks) == 1}
              for key, table in vocab.modifier_words.items()}
    for value in vocab.change_rank:  # "resolved" has no words of its own in the lexicon (it is a cue there)
        tables["change"].setdefault(value, value)
    return tables


def parse_label(label: str) -> tuple[EntityKind, Assertion] | None:
    """RadGraph label -> (kind, assertion); None for labels outside the schema."""
    low = label.lower()
    kind: EntityKind
    if low.startswith(("observation", "obs")):
        kind = "observation"
    elif low.startswith(("anatomy", "anat")):
        kind = "anatomy"
    else:
        return None
    if "absent" in low or low.endswith("-da"):
        return kind, "absent"
    if "uncertain" in low or low.endswith("-u"):
        return kind, "uncertain"
    return kind, "present"


def align_tokens(report: str, tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Character span of each RadGraph token in the original report (tokens are substrings in
    order after the package's re-spacing); (-1, -1) where a token was rewritten."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    for tok in tokens:
        at = report.find(tok, cursor)
        if at < 0:
            spans.append((-1, -1))
            continue
        spans.append((at, at + len(tok)))
        cursor = at + len(tok)
    return spans


def _modifier_graph(entities: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, list[str]], set[str], dict[str, list[str]]]:
    """(head -> its direct modifiers, keys that modify something, observation -> anatomies)."""
    modified_by: dict[str, list[str]] = defaultdict(list)
    modifiers: set[str] = set()
    located: dict[str, list[str]] = defaultdict(list)
    for key in sorted(entities, key=int):
        for relation, target in entities[key].get("relations", []):
            if target == key or target not in entities:
                continue
            if relation == "modify":
                if key in modified_by.get(target, []) or target in modified_by.get(key, []):
                    continue  # a 2-cycle: keep the first direction seen, as radgraph's filter_loop does
                modified_by[target].append(key)
                modifiers.add(key)
            elif relation == "located_at":
                located[key].append(target)
    return modified_by, modifiers, located


def _chain(key: str, modified_by: Mapping[str, list[str]]) -> list[str]:
    """Every entity that modifies `key`, directly or through other modifiers (cycle-safe)."""
    seen: set[str] = {key}
    order: list[str] = []
    stack = list(modified_by.get(key, []))
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        order.append(k)
        stack.extend(modified_by.get(k, []))
    return order


def entities_from_radgraph(
    doc: Mapping[str, Any],
    report: str,
    *,
    normalise: Normaliser | None = None,
    modifier: ModifierNormaliser | None = None,
) -> list[Entity]:
    """One report's RadGraph annotation -> common-schema entities, in text order.

    normalise: phrase -> concept id (e.g. the lexicon's `concept_for_text`); modifier: (key,
    word) -> canonical value (the lexicon's `normalise_modifier`); without it, the built-in
    laterality and severity word lists are used.
    """
    ents: Mapping[str, Mapping[str, Any]] = doc.get("entities", {})
    tokens = str(doc.get("text", "")).split()
    spans = align_tokens(report, tokens)
    parsed = {k: parse_label(str(v["label"])) for k, v in ents.items()}
    modified_by, modifiers, located = _modifier_graph(ents)

    def pos(k: str) -> tuple[int, int]:
        return int(ents[k]["start_ix"]), int(ents[k]["end_ix"])

    def surface(k: str) -> tuple[str, int, int]:
        s, e = pos(k)
        if 0 <= s <= e < len(spans) and spans[s][0] >= 0 and spans[e][1] >= 0:
            return report[spans[s][0] : spans[e][1]], spans[s][0], spans[e][1]
        return str(ents[k]["tokens"]), -1, -1

    def phrase(keys: Sequence[str]) -> str:
        """The words the entities cover, once each, in text order (entities may overlap)."""
        covered = sorted({i for k in keys for i in range(pos(k)[0], pos(k)[1] + 1) if 0 <= i < len(tokens)})
        return " ".join(tokens[i] for i in covered).lower().strip(" .,;:")

    def qualifier_words(keys: Sequence[str]) -> dict[str, str]:
        """Laterality / severity (/ change, with the lexicon) values among the entities' words."""
        found: dict[str, str] = {}
        for k in sorted(keys, key=pos):
            words = surface(k)[0].lower().strip(".,;:()")
            for unit in (words, *words.replace("-", " ").split()):
                unit = unit.strip(".,;:()")
                for key in MODIFIER_KEYS:
                    if modifier is not None:
                        value = modifier(key, unit)
                    else:
                        value = tables[key].get(unit)
                    if value:
                        found.setdefault(key, value)
        return found

    tables = modifier_tables()
    out: list[tuple[tuple[int, int], Entity]] = []
    for key, kind_assertion in parsed.items():
        if kind_assertion is None or key in modifiers:
            continue
        kind, assertion = kind_assertion
        chain = [k for k in _chain(key, modified_by) if parsed.get(k) is not None]
        text, start, end = surface(key)
        mods = qualifier_words(chain)
        anatomy: str | None = None
        if kind == "observation":
            labels = [parsed[k][1] for k in [key, *chain] if parsed.get(k)]  # type: ignore[index]
            assertion = "absent" if "absent" in labels else "uncertain" if "uncertain" in labels else "present"
            anatomy_keys = sorted((a for a in located.get(key, []) if parsed.get(a)), key=pos)
            phrases = [phrase([a, *_chain(a, modified_by)]) for a in anatomy_keys]
            anatomy = ", ".join(dict.fromkeys(p for p in phrases if p)) or None
            for k, v in qualifier_words([k for a in anatomy_keys for k in [a, *_chain(a, modified_by)]]).items():
                mods.setdefault(k, v)
        concept = None
        if normalise is not None:
            qualifiers = [k for k in chain if not qualifier_words([k])]
            candidates = [phrase([key, *qualifiers])]
            if anatomy:  # e.g. "effusion" located at "left pleural" -> try "pleural effusion" too
                core = " ".join(w for w in anatomy.split() if w.strip(",") not in tables["laterality"])
                candidates += [f"{anatomy} {text}", f"{core} {text}".strip()]
            candidates.append(text)
            concept = next((c for c in map(normalise, dict.fromkeys(candidates)) if c), None)
            if concept is None and kind == "observation" and assertion == "absent":
                # RadGraph reads "No interval change" as the observation "change", absent: the
                # statement is stability, present (the lexicon reads "no ... change" that way)
                stated = normalise(f"no {candidates[0]}")
                vocab = load_vocabulary()
                if stated in vocab.concepts and vocab.category(stated) == "longitudinal":
                    concept, assertion = stated, "present"
        out.append((pos(key), Entity(text, kind, assertion, concept, mods, anatomy, start, end)))
    return [entity for _, entity in sorted(out, key=lambda item: item[0])]
