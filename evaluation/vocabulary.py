"""The concept vocabulary: which concepts radsteer knows, their categories, names and synonyms,
and the modifier tables (laterality, severity, temporal change), read from data/lexicon.yaml.

Why a module of its own: targets are resolved (protocols, `radsteer label`, the interpretation
tool), the RadGraph mapping normalises modifier words and the cue parser (evaluation.lexicon)
reads reports, all from this one source; none of them needs the others' machinery.

The small stable API other packages use:

    concepts(category=None) -> list[Concept]     every concept (or those of one category)
    resolve(name) -> str                          concept id of an id, name or synonym; UnknownConceptError
    resolve_all(names) -> list[str]               the same for a list (order kept, duplicates dropped)
    category(concept_id) -> str                   finding / device / anatomy / longitudinal / textual
    search(query) -> list[Concept]                concepts whose id, name or a synonym contains the words

Categories: `finding` and `device` (observations), `anatomy` (locations; never a target),
`longitudinal` (comparison with a prior study and its outcomes: worsening, improvement,
stability, new_finding, resolution — also carried by findings as their `change` attribute) and
`textual` (report language: recommendation, communication, technical_limitation, measurement).
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from steering.errors import RadsteerError

DEFAULT_PATH = Path(__file__).with_name("data") / "lexicon.yaml"

CATEGORIES: tuple[str, ...] = ("finding", "device", "anatomy", "longitudinal", "textual")
TARGET_CATEGORIES: tuple[str, ...] = ("finding", "device", "longitudinal", "textual")
OBS_KINDS = ("device", "finding")  # what a report observes (modifiers attach to these)
CONCEPT_KINDS = CATEGORIES
ASSERTION_RANK = {"absent": 0, "uncertain": 1, "present": 2}
LATERALITY_SETS = {"left": frozenset({"left"}), "right": frozenset({"right"}),
                   "bilateral": frozenset({"left", "right"})}

_GROUP = re.compile(r"\(([^()]*)\)")
_PHRASE_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)*|[.,;:/?!]")


class LexiconError(RadsteerError):
    """The vocabulary / lexicon file is malformed (a bad entry or two phrases that mean different things)."""


class UnknownConceptError(RadsteerError):
    """A target name that is not a concept id, name or synonym in the vocabulary."""

    def __init__(self, name: str, suggestions: Sequence[str], reason: str = "") -> None:
        self.name = name
        self.suggestions = list(suggestions)
        hint = f"; did you mean: {', '.join(self.suggestions)}?" if self.suggestions else ""
        what = reason or "is not a concept id, name or synonym in the lexicon"
        super().__init__(f"target {name!r} {what}{hint} "
                         "(`radsteer concepts [QUERY]` lists the known concepts)")


@dataclass(frozen=True)
class Concept:
    id: str
    kind: str  # the category: finding / device / anatomy / longitudinal / textual
    name: str
    parent: str | None = None
    laterality: str | None = None  # implied by anatomy such as "lingula"
    synonyms: tuple[str, ...] = ()  # expanded phrases read in reports
    absent_forms: tuple[str, ...] = ()
    uncertain_forms: tuple[str, ...] = ()  # hedged mentions ("heart size is borderline")
    look_alikes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # further names a target may use, not read in reports
    change: tuple[str, ...] = ()  # longitudinal: the findings' change values that express it

    @property
    def category(self) -> str:
        return self.kind

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "category": self.kind, "name": self.name, "parent": self.parent,
                "synonyms": list(self.synonyms), "names": list(self.names), "change": list(self.change)}


# ------------------------------------------------------------------ phrase helpers

def expand_phrase(phrase: str) -> list[str]:
    """All spellings of one vocabulary phrase: "(a|b) c (d|)" -> ["a c d", "a c", "b c d", "b c"]."""
    parts: list[list[str]] = []
    pos = 0
    for m in _GROUP.finditer(phrase):
        parts.append([phrase[pos:m.start()]])
        parts.append(m.group(1).split("|"))
        pos = m.end()
    parts.append([phrase[pos:]])
    out = []
    for combo in itertools.product(*parts):
        text = " ".join(" ".join(combo).split())
        if text:
            out.append(text)
    return out


def phrase_tokens(text: str) -> tuple[str, ...]:
    return tuple(_PHRASE_TOKEN.findall(text.lower().replace("\u2019", "'").replace("-", " ")))


def plural(word: str) -> str:
    if word.endswith("sis"):
        return word[:-3] + "ses"
    if word.endswith("ax"):
        return word[:-2] + "aces"
    if len(word) > 2 and word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    return word + "s"


# ------------------------------------------------------------------ the vocabulary

class Vocabulary:
    """Concepts and modifier tables of one vocabulary file. Build with `load_vocabulary()`."""

    def __init__(self, data: dict[str, Any], source: str = "<dict>") -> None:
        self.source = source
        self.concepts: dict[str, Concept] = {}
        self.severity_rank: dict[str, int] = {}
        self.change_rank: dict[str, int] = {}
        self.non_findings: frozenset[str] = frozenset()
        # words -> canonical value, per modifier key ("left sided" -> "left"); shared with RadGraph
        self.modifier_words: dict[str, dict[tuple[str, ...], str]] = {"laterality": {}, "severity": {}, "change": {}}
        self._names: dict[str, str] | None = None
        self._spellings: list[str] = []
        self._build_vocabulary(data)

    def phrases(self, entries: Any, where: str) -> list[tuple[str, ...]]:
        if entries is None:
            return []
        if not isinstance(entries, list):
            raise LexiconError(f"{self.source}: {where} must be a list of phrases")
        out = []
        for e in entries:
            if not isinstance(e, str):
                raise LexiconError(f"{self.source}: {where}: {e!r} is not a phrase (quote it in YAML)")
            out.extend(phrase_tokens(x) for x in expand_phrase(e))
        return out

    def _build_vocabulary(self, data: dict[str, Any]) -> None:
        mods = data.get("modifiers") or {}
        for value, entries in (mods.get("laterality") or {}).items():
            if value not in LATERALITY_SETS:
                raise LexiconError(f"{self.source}: laterality {value!r} must be left, right or bilateral")
            for toks in self.phrases(entries, f"modifiers.laterality.{value}"):
                self.modifier_words["laterality"][toks] = value
        for key, rank_map in (("severity", self.severity_rank), ("change", self.change_rank)):
            for value, spec in (mods.get(key) or {}).items():
                if not isinstance(spec, dict) or "rank" not in spec:
                    raise LexiconError(f"{self.source}: modifiers.{key}.{value} needs rank and words")
                rank_map[value] = int(spec["rank"])
                for toks in self.phrases(spec.get("words"), f"modifiers.{key}.{value}"):
                    self.modifier_words[key][toks] = value
        cues = data.get("cues") or {}
        self.non_findings = frozenset(" ".join(t) for t in self.phrases(cues.get("non_findings"), "cues.non_findings"))
        for i, c in enumerate(data.get("concepts") or []):
            where = f"concepts[{i}]"
            if not isinstance(c, dict) or not c.get("id") or c.get("kind") not in CONCEPT_KINDS:
                raise LexiconError(f"{self.source}: {where} needs an id and a kind ({', '.join(CONCEPT_KINDS)})")
            cid = str(c["id"])
            if cid in self.concepts:
                raise LexiconError(f"{self.source}: concept id {cid!r} appears twice")
            change = tuple(str(v) for v in (c.get("change") or ()))
            for v in change:
                if v not in self.change_rank:
                    raise LexiconError(f"{self.source}: {cid}.change {v!r} is not a change value "
                                       f"({', '.join(self.change_rank)})")
            if change and c["kind"] != "longitudinal":
                raise LexiconError(f"{self.source}: {cid}.change is only for longitudinal concepts")
            syn = self.phrases(c.get("synonyms"), f"{cid}.synonyms")
            absent = self.phrases(c.get("absent_forms"), f"{cid}.absent_forms")
            hedged = self.phrases(c.get("uncertain_forms"), f"{cid}.uncertain_forms")
            look = self.phrases(c.get("not"), f"{cid}.not")
            names = self.phrases(c.get("names"), f"{cid}.names")
            self.concepts[cid] = Concept(
                cid, c["kind"], str(c.get("name") or cid.replace("_", " ")), c.get("parent"), c.get("laterality"),
                tuple(" ".join(t) for t in syn), tuple(" ".join(t) for t in absent),
                tuple(" ".join(t) for t in hedged), tuple(" ".join(t) for t in look),
                tuple(" ".join(t) for t in names), change)
        for c in self.concepts.values():
            if c.parent is not None and c.parent not in self.concepts:
                raise LexiconError(f"{self.source}: {c.id}.parent {c.parent!r} is not a concept")

    # -- queries
    def category(self, cid: str) -> str:
        """The category of a concept id (KeyError for an unknown id: resolve names first)."""
        return self.concepts[cid].kind

    def of_category(self, *categories: str) -> list[Concept]:
        return [c for c in self.concepts.values() if not categories or c.kind in categories]

    def ancestors(self, cid: str) -> list[str]:
        out, seen = [], set()
        c = self.concepts.get(cid)
        while c is not None and c.parent and c.parent not in seen:
            seen.add(c.parent)
            out.append(c.parent)
            c = self.concepts.get(c.parent)
        return out

    def related(self, a: str, b: str) -> bool:
        """True when one concept is the other or an ancestor of it ("pacemaker" / "cardiac device")."""
        return a == b or a in self.ancestors(b) or b in self.ancestors(a)

    def longitudinal_for_change(self, value: str | None) -> list[str]:
        """The longitudinal concepts a finding's change value expresses ("increased" -> worsening, comparison)."""
        if not value or value == "unstated":
            return []
        return [c.id for c in self.concepts.values() if value in c.change]

    def normalise_modifier(self, key: str, value: str) -> str | None:
        """A free-text modifier ("mildly", "left-sided") as the canonical value, or None."""
        words = self.modifier_words.get(key, {})
        toks = phrase_tokens(value)
        if toks in words:
            return words[toks]
        known = {"laterality": LATERALITY_SETS, "severity": self.severity_rank, "change": self.change_rank}.get(key, {})
        return value if value in known else None

    def _name_index(self) -> dict[str, str]:
        """Every id, canonical name, name and synonym (and its plural) -> concept id."""
        if self._names is None:
            index: dict[str, str] = {}
            for c in self.concepts.values():
                keys = [c.id.replace("_", " "), " ".join(phrase_tokens(c.name)), *c.names, *c.synonyms]
                for key in keys:
                    index.setdefault(key, c.id)
            self._spellings = list(index)  # what suggestions are drawn from (no made-up plurals)
            for c in self.concepts.values():  # plurals last: a real name always wins
                for key in (*c.names, *c.synonyms, " ".join(phrase_tokens(c.name))):
                    words = key.split()
                    if words and words[-1].isalpha():
                        index.setdefault(" ".join([*words[:-1], plural(words[-1])]), c.id)
            self._names = index
        return self._names

    def suggestions(self, name: str, n: int = 5) -> list[str]:
        """Up to n close known names, one per concept ("pleural_effusion", "icd ('aicd')")."""
        index = self._name_index()
        key = " ".join(phrase_tokens(name.replace("_", " ")))
        by_concept: dict[str, str] = {}
        for k in difflib.get_close_matches(key, self._spellings, n=12, cutoff=0.75):
            cid = index[k]
            if self.concepts[cid].kind in TARGET_CATEGORIES:
                by_concept.setdefault(cid, cid if k == cid.replace("_", " ") else f"{cid} ({k!r})")
        return list(by_concept.values())[:n]

    def resolve_one(self, name: str) -> str:
        """The concept id of one target name (id, name or synonym, any case, plural allowed)."""
        if not isinstance(name, str) or not name.strip():
            raise UnknownConceptError(str(name), [], "is not a non-empty string")
        cid = self._name_index().get(" ".join(phrase_tokens(name.replace("_", " "))))
        if cid is None:
            raise UnknownConceptError(name, self.suggestions(name))
        if self.concepts[cid].kind not in TARGET_CATEGORIES:
            raise UnknownConceptError(name, [], f"is an anatomy term ({cid}), not a finding or device")
        return cid

    def resolve(self, names: str | Iterable[str]) -> list[str]:
        """Concept ids for target names, in order, without duplicates."""
        if isinstance(names, str):
            names = [names]
        out: list[str] = []
        for name in names:
            cid = self.resolve_one(name)
            if cid not in out:
                out.append(cid)
        return out

    def search(self, query: str = "") -> list[Concept]:
        """Concepts whose id, name, names or synonyms contain every word of the query."""
        words = phrase_tokens(query.replace("_", " "))
        out = []
        for c in self.concepts.values():
            hay = " ".join([c.id.replace("_", " "), c.name.lower(), c.kind, *c.names, *c.synonyms])
            if all(w in hay for w in words):
                out.append(c)
        return out


def read_vocabulary_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LexiconError(f"lexicon file not found: {p}") from exc
    except yaml.YAMLError as exc:
        raise LexiconError(f"{p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise LexiconError(f"{p} must hold a mapping with modifiers, cues and concepts")
    return data


@functools.lru_cache(maxsize=4)
def _load(path: str) -> Vocabulary:
    return Vocabulary(read_vocabulary_file(path), source=path)


def load_vocabulary(path: str | Path | None = None) -> Vocabulary:
    """The vocabulary at `path` (default: the bundled data/lexicon.yaml), read once per process."""
    return _load(str(Path(path) if path else DEFAULT_PATH))


# ------------------------------------------------------------------ the module-level API

def concepts(category: str | None = None) -> list[Concept]:
    """Every concept of the bundled vocabulary, or those of one category."""
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"unknown concept category {category!r}; choose one of {', '.join(CATEGORIES)}")
    return load_vocabulary().of_category(*(() if category is None else (category,)))


def resolve(name: str) -> str:
    """The concept id of a target name; UnknownConceptError (a RadsteerError) lists close names."""
    return load_vocabulary().resolve_one(name)


def resolve_all(names: str | Iterable[str]) -> list[str]:
    return load_vocabulary().resolve(names)


def category(concept_id: str) -> str:
    return load_vocabulary().category(concept_id)


def search(query: str = "") -> list[Concept]:
    return load_vocabulary().search(query)
