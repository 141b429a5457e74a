"""The offline `lexicon` entity extractor: a chest X-ray concept lexicon (data/lexicon.yaml),
negation and uncertainty cues with scope, and laterality / severity / change modifiers.

Why it exists: RadGraph needs weights and a few seconds per hundred reports; the lexicon needs
nothing, is deterministic, and runs thousands of reports a second on one core, so every study
can be labelled offline and RadGraph becomes a second opinion rather than a requirement.

How it reads a report (in one pass, no backtracking):
1. tokens: words (`[a-z0-9]+`, apostrophes kept) and the punctuation that matters (`. , ; : / ? !`);
   hyphens count as spaces, everything else is dropped;
2. a token trie of every phrase in the lexicon finds the longest phrase at each position
   (observations, anatomy, modifiers, cues, comparison language and look-alikes to ignore);
3. per sentence, forward scopes of pre-cues ("no X or Y") and backward scopes of post-cues
   ("X has resolved") give each observation an assertion — the nearest cue wins;
4. per clause (split at commas, conjunctions, cues and scope ends), modifiers attach to the next
   observation after them, else to the one before them.
The output is the common schema of evaluation.entities (the same one the RadGraph backend writes).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.entities import Entity
from evaluation.vocabulary import (  # noqa: F401  (re-exported: the lexicon's public names)
    ASSERTION_RANK,
    CONCEPT_KINDS,
    DEFAULT_PATH,
    LATERALITY_SETS,
    OBS_KINDS,
    Concept,
    LexiconError,
    UnknownConceptError,
    Vocabulary,
    expand_phrase,
    phrase_tokens,
    plural,
    read_vocabulary_file,
)

_TOKEN = re.compile(r"\n[ \t]*\n|[a-z0-9]+(?:['\u2019][a-z]+)*|[.,;:/?!]", re.IGNORECASE)
_ABBREVIATIONS = frozenset({"vs", "approx", "dr", "st", "cf", "eg", "ie", "fig", "no", "mr", "mrs"})
_VERBS = frozenset({"is", "are", "appears", "appear", "remains", "remain", "seems", "was", "were"})
_FILLERS = frozenset({"a", "an", "the", "any", "of"})
_AND = frozenset({"and", "as well as", "along with", "plus"})
_UNITS = frozenset({"mm", "cm", "millimeter", "millimeters", "millimetre", "millimetres", "centimeter",
                    "centimeters", "centimetre", "centimetres"})
_SIZE = re.compile(r"\d+(?:mm|cm)")


@dataclass(frozen=True)
class Role:
    """What a phrase means: kind is one of obs, anat, lat, sev, chg, neg_pre, neg_post, unc_pre,
    unc_post, unc_both, pseudo, end, conj, cmp, ignore."""

    kind: str
    value: str | None = None
    absent: bool = False  # an observation phrase that states absence ("normal heart size")
    hedged: bool = False  # an observation phrase that states it uncertainly ("heart size is borderline")


@dataclass
class _Item:
    kind: str
    value: str | None
    start: int  # character offsets
    end: int
    tok: int  # token index (for distances)
    absent: bool = False
    verb: bool = False  # the phrase contains a verb ("heart is enlarged")
    inner: dict[str, str] = field(default_factory=dict)
    statement: bool = False  # a longitudinal / textual concept: asserted, but never takes modifiers
    hedged: bool = False


# ------------------------------------------------------------------ the lexicon

class Lexicon(Vocabulary):
    """The concept vocabulary plus its cue phrases, compiled into a token trie for reading
    reports. Build with `load_lexicon()`."""

    def __init__(self, data: dict[str, Any], source: str = "<dict>") -> None:
        super().__init__(data, source)
        self._trie: dict[str, Any] = {}
        self._inner_skip: dict[str, Role] = {}
        self._conflicts: list[str] = []
        self._build_trie(data)

    # -- building
    def _add(self, tokens: tuple[str, ...], role: Role, where: str) -> None:
        if not tokens:
            return
        node = self._trie
        for t in tokens:
            node = node.setdefault(t, {})
        old = node.get(None)
        if old is not None and old != role:
            if role.kind == "ignore":
                return  # a look-alike that is already something else keeps that meaning
            self._conflicts.append(f"{' '.join(tokens)!r} is both {_fmt(old)} and {_fmt(role)} ({where})")
            return
        node[None] = role

    def _build_trie(self, data: dict[str, Any]) -> None:
        for key, kind in (("laterality", "lat"), ("severity", "sev"), ("change", "chg")):
            for toks, value in self.modifier_words[key].items():
                self._add(toks, Role(kind, value), f"{key} {value}")
        cues = data.get("cues") or {}
        for key, kind in (("resolution_pre", "neg_pre"), ("resolution_post", "neg_post")):
            for toks in self.phrases(cues.get(key), f"cues.{key}"):  # negations that say "it was there"
                self._add(toks, Role(kind, "resolved"), f"cues.{key}")
        cue_kinds = {"negation_pre": "neg_pre", "negation_post": "neg_post", "uncertainty_pre": "unc_pre",
                     "uncertainty_post": "unc_post", "uncertainty_both": "unc_both", "scope_end": "end",
                     "conjunctions": "conj", "comparison": "cmp", "ignore": "ignore"}
        for key, kind in cue_kinds.items():
            for toks in self.phrases(cues.get(key), f"cues.{key}"):
                # conjunctions keep their words: "and" may end a negation scope, "or" never does
                self._add(toks, Role(kind, " ".join(toks) if kind == "conj" else None), f"cues.{key}")
        for toks in self.phrases(cues.get("pseudo_negation"), "cues.pseudo_negation"):
            self._add(toks, Role("chg", "unchanged"), "cues.pseudo_negation")
        for concept in self.concepts.values():
            kind = "anat" if concept.kind == "anatomy" else "obs"
            for phrase in concept.synonyms:
                toks = tuple(phrase.split())
                self._add(toks, Role(kind, concept.id), f"{concept.id}.synonyms")
                self._add(toks[:-1] + (plural(toks[-1]),), Role(kind, concept.id), f"{concept.id}.synonyms (plural)")
            for phrase in concept.absent_forms:
                self._add(tuple(phrase.split()), Role("obs", concept.id, absent=True), f"{concept.id}.absent_forms")
            for phrase in concept.uncertain_forms:
                self._add(tuple(phrase.split()), Role("obs", concept.id, hedged=True), f"{concept.id}.uncertain_forms")
        for c in self.concepts.values():  # look-alikes: read as nothing unless they are something else
            for phrase in c.look_alikes:
                self._add(tuple(phrase.split()), Role("ignore"), f"{c.id}.not")
        if self._conflicts:
            raise LexiconError(f"{self.source}: conflicting phrases: " + "; ".join(self._conflicts[:10]))
        self.statement_ids = frozenset(c.id for c in self.concepts.values() if c.kind in ("longitudinal", "textual"))
        # a finding's change value, read without a finding, states the longitudinal concept itself
        self.change_statement = {v: next((c for c in self.longitudinal_for_change(v) if c != "comparison"), None)
                                 for v in self.change_rank}
        self.measurement = "measurement" if "measurement" in self.concepts else None
        self.comparison = "comparison" if "comparison" in self.concepts else None
        # single words that may sit inside a phrase ("heart is [mildly] enlarged")
        for key, kind in (("severity", "sev"), ("laterality", "lat")):
            for toks, value in self.modifier_words[key].items():
                if len(toks) == 1:
                    self._inner_skip[toks[0]] = Role(kind, value)
        for c in self.concepts.values():  # every look-alike must stay a look-alike
            for phrase in c.look_alikes:
                if any(e.concept == c.id for e in self._read(phrase)):
                    raise LexiconError(f"{self.source}: look-alike {phrase!r} is still read as {c.id}")

    # -- matching
    def match(self, tokens: Sequence[str], i: int) -> tuple[int, Role, dict[str, str], bool] | None:
        """Longest phrase starting at token i: (end index, role, inner modifiers, has verb).

        A single severity / laterality word inside a phrase may be skipped; when the word is also
        the next word of a longer phrase ("heart is mildly prominent" vs "heart is [mildly]
        enlarged") both readings are followed and the longest match wins."""
        node = self._trie.get(tokens[i])
        if node is None:
            return None
        best: tuple[int, Role, dict[str, str], bool] | None = (i + 1, node[None], {}, False) if None in node else None
        n = len(tokens)
        stack: list[tuple[dict[str, Any], int, dict[str, str]]] = [(node, i + 1, {})]
        while stack:
            node, j, inner = stack.pop()
            while j < n:
                t = tokens[j]
                skip = self._inner_skip.get(t)
                if skip is not None and j + 1 < n and tokens[j + 1] in node:
                    key = "severity" if skip.kind == "sev" else "laterality"
                    if t in node:  # both readings: explore the skip later
                        stack.append((node, j + 1, {**inner, key: skip.value or ""}))
                    else:
                        inner = {**inner, key: skip.value or ""}
                        j += 1
                        continue
                nxt = node.get(t)
                if nxt is None:
                    break
                node = nxt
                j += 1
                if None in node and (best is None or j > best[0]):
                    best = (j, node[None], inner, False)
        if best is not None and best[1].kind == "obs":
            best = (best[0], best[1], best[2], any(t in _VERBS for t in tokens[i:best[0]]))
        return best

    def _read(self, text: str) -> list[Entity]:
        return LexiconExtractor(self).extract_one(text)

    # -- queries that need the parser
    def concept_for_text(self, text: str) -> str | None:
        """The observation concept a free-text entity (e.g. RadGraph's "effusion") normalises to."""
        found = {e.concept for e in self._read(text) if e.kind == "observation"}
        return found.pop() if len(found) == 1 else None


def _fmt(role: Role) -> str:
    return (role.kind + (f" {role.value}" if role.value else "") + (" (absent)" if role.absent else "")
            + (" (uncertain)" if role.hedged else ""))


@functools.lru_cache(maxsize=4)
def _load(path: str) -> Lexicon:
    return Lexicon(read_vocabulary_file(path), source=path)


def load_lexicon(path: str | Path | None = None) -> Lexicon:
    """The lexicon at `path` (default: the bundled data/lexicon.yaml), compiled once per process."""
    return _load(str(Path(path) if path else DEFAULT_PATH))


def resolve_concepts(names: str | Iterable[str], lexicon: Vocabulary | None = None) -> list[str]:
    """Concept ids for target names (ids, names or synonyms); an unknown name raises
    UnknownConceptError listing the closest known names."""
    if lexicon is None:
        from evaluation.vocabulary import load_vocabulary

        lexicon = load_vocabulary()
    return lexicon.resolve(names)


# ------------------------------------------------------------------ the extractor

class LexiconExtractor:
    """Deterministic, weight-free entity extraction from the concept lexicon."""

    name = "lexicon"

    def __init__(self, lexicon: Lexicon | str | Path | None = None) -> None:
        self.lexicon = lexicon if isinstance(lexicon, Lexicon) else load_lexicon(lexicon)

    def extract(self, texts: Sequence[str]) -> list[list[Entity]]:
        return [self.extract_one(t) for t in texts]

    # -- stage 1+2: tokens and phrase items, grouped into sentences
    def _sentences(self, text: str) -> list[list[_Item]]:
        raw = [(m.group().lower().replace("\u2019", "'"), m.start(), m.end()) for m in _TOKEN.finditer(text)]
        toks = [t for t, _, _ in raw]
        sentences: list[list[_Item]] = [[]]
        lex = self.lexicon
        i, n = 0, len(raw)
        while i < n:
            tok, start, end = raw[i]
            if tok[0] == "\n" or tok == "!" or tok == ";" or tok == ":":
                sentences.append([])
                i += 1
                continue
            if tok == ".":
                after = text[end:end + 1]
                prev = toks[i - 1] if i else ""
                if (not after or after.isspace()) and not (len(prev) == 1 or prev in _ABBREVIATIONS):
                    sentences.append([])
                i += 1
                continue
            if tok == "?":
                if i + 1 < n and raw[i + 1][1] == end and raw[i + 1][0][0].isalnum():
                    sentences[-1].append(_Item("unc_pre", None, start, end, i))  # "?consolidation"
                else:
                    sentences[-1].append(_Item("unc_post", None, start, end, i))  # "pneumonia?"
                    sentences.append([])
                i += 1
                continue
            if tok == ",":
                sentences[-1].append(_Item("comma", None, start, end, i))
                i += 1
                continue
            if lex.measurement and tok[0].isdigit():  # "12 mm", "1.5 cm", "2cm": a measurement statement
                j = i + 2 if (i + 2 < n and toks[i + 1] == "." and toks[i + 2][0].isdigit()
                              and raw[i + 1][1] == end and raw[i + 2][1] == raw[i + 1][2]) else i  # decimals
                if _SIZE.fullmatch(toks[j]) or (j + 1 < n and toks[j].isdigit() and toks[j + 1] in _UNITS):
                    j = j + 1 if _SIZE.fullmatch(toks[j]) else j + 2
                    sentences[-1].append(_Item("obs", lex.measurement, start, raw[j - 1][2], i, statement=True))
                    i = j
                    continue
            m = lex.match(toks, i)
            if m is None:
                sentences[-1].append(_Item("word", tok, start, end, i))
                i += 1
                continue
            j, role, inner, verb = m
            if role.kind == "ignore":  # kept (as a look-alike) only so a change word beside it is not a statement
                sentences[-1].append(_Item("lookalike", None, start, raw[j - 1][2], i))
            else:
                sentences[-1].append(_Item(role.kind, role.value, start, raw[j - 1][2], i, role.absent, verb, inner,
                                           role.kind == "obs" and role.value in lex.statement_ids, role.hedged))
            i = j
        return [s for s in sentences if s]

    # -- stage 3: assertions from cue scopes
    @staticmethod
    def _assertions(items: list[_Item]) -> dict[int, tuple[int, str, str | None]]:
        """index of each observation item -> (distance to its nearest cue, cue kind, cue value)."""
        cues: dict[int, tuple[int, str, str | None]] = {}

        def note(k: int, cue: _Item, kind: str, backward: bool = False) -> None:
            d = abs(items[k].tok - cue.tok)
            # on a tie the cue after the finding wins: "possible effusion has resolved"
            if k not in cues or d < cues[k][0] or (backward and d == cues[k][0]):
                cues[k] = (d, kind, cue.value)

        n = len(items)
        # forward scopes
        open_cue: _Item | None = None
        first = False  # no observation yet since the cue: only then may a statement take it
        for k, it in enumerate(items):
            if it.kind in ("neg_pre", "unc_pre", "unc_both"):
                open_cue, first = it, True
            elif it.kind == "end":
                open_cue = None
            elif open_cue is not None and (it.kind == "comma" or _is_and(it)):
                if not _continues_list(items, k + 1):
                    open_cue = None
            elif open_cue is not None and it.kind == "obs":
                if not it.statement or first:
                    note(k, open_cue, "neg" if open_cue.kind == "neg_pre" else "unc")
                first = False
        # backward scopes (and the backward half of "versus")
        for k, it in enumerate(items):
            if it.kind not in ("neg_post", "unc_post", "unc_both"):
                continue
            kind = "neg" if it.kind == "neg_post" else "unc"
            b = k - 1
            while b >= 0 and items[b].kind not in ("comma", "end") and items[b].kind not in ("neg_post", "unc_post"):
                if items[b].kind == "obs":
                    note(b, it, kind, backward=True)
                b -= 1
            if it.kind == "unc_both":
                f = k + 1
                while f < n and items[f].kind not in ("comma", "end"):
                    if items[f].kind == "obs":
                        note(f, it, kind)
                    f += 1
        return cues

    # -- stage 4: modifiers per clause
    @staticmethod
    def _clauses(items: list[_Item]) -> list[tuple[str, list[int]]]:
        """(kind of the boundary before it, item indices) for each clause of a sentence."""
        clauses: list[tuple[str, list[int]]] = [("start", [])]
        for k, it in enumerate(items):
            if it.kind in ("comma", "conj", "end", "neg_pre", "unc_pre", "unc_both"):
                clauses.append((it.kind, []))
                if it.kind in ("neg_pre", "unc_pre"):
                    clauses[-1][1].append(k)  # modifiers after "no" still belong to what follows
                continue
            clauses[-1][1].append(k)
        return [c for c in clauses if c[1]]

    def _modifier_candidates(self, items: list[_Item], clause: list[int], obs: list[int],
                             cand: dict[int, dict[str, tuple[int, int, str]]], tail_of: int | None) -> None:
        """Offer each modifier of a clause to an observation: the next one after it, else the one
        before it; a clause with no observation after a comma ("effusion, unchanged") offers its
        modifiers, at the lowest priority, to the last observation of the clause before."""
        lex = self.lexicon
        for k in clause:
            it = items[k]
            if it.kind in ("lat", "sev", "chg"):
                key, value, implied = {"lat": "laterality", "sev": "severity", "chg": "change"}[it.kind], it.value, 0
            elif it.kind == "anat" and lex.concepts[it.value or ""].laterality:
                key, value, implied = "laterality", lex.concepts[it.value or ""].laterality, 2
            else:
                continue
            if tail_of is not None:
                target, prio = tail_of, 5
            else:
                after = [o for o in obs if o > k]
                target, prio = (after[0], implied) if after else ([o for o in obs if o < k][-1], 1 + implied)
            c = (prio, abs(k - target), value or "")
            if key not in cand[target] or c < cand[target][key]:
                cand[target][key] = c

    def _standalone_changes(self, items: list[_Item], clauses: list[tuple[str, list[int]]]) -> None:
        """Change words in a clause with no finding to attach to ("No interval change.",
        "Findings are stable.") state the longitudinal concept itself: make them statements."""
        prev_obs = False
        for boundary, clause in clauses:
            has_obs = any(items[k].kind == "obs" and not items[k].statement for k in clause)
            if not has_obs and not (boundary == "comma" and prev_obs):
                subject = False  # "the line is unchanged": about a look-alike, not the whole study
                for k in clause:
                    it = items[k]
                    subject = subject or it.kind == "lookalike"
                    cid = self.lexicon.change_statement.get(it.value or "") if it.kind == "chg" else None
                    if cid is not None and not subject:
                        items[k] = _Item("obs", cid, it.start, it.end, it.tok, statement=True)
            prev_obs = has_obs

    def extract_one(self, text: str) -> list[Entity]:
        """Entities of one report, in reading order."""
        out: list[Entity] = []
        lex = self.lexicon
        for items in self._sentences(text):
            clauses = self._clauses(items)
            self._standalone_changes(items, clauses)
            cues = self._assertions(items)
            cand: dict[int, dict[str, tuple[int, int, str]]] = {}  # obs -> key -> (priority, distance, value)
            anat_of: dict[int, str] = {}
            prev_obs: list[int] = []
            for boundary, clause in clauses:
                obs = [k for k in clause if items[k].kind == "obs" and not items[k].statement]
                cand.update({k: {} for k in obs})
                if obs:
                    self._modifier_candidates(items, clause, obs, cand, None)
                    anats = [k for k in clause if items[k].kind == "anat"]
                    for o in obs:
                        if anats:
                            anat_of[o] = items[min(anats, key=lambda k, o=o: abs(k - o))].value or ""
                elif boundary == "comma" and prev_obs:
                    self._modifier_candidates(items, clause, obs, cand, prev_obs[-1])
                prev_obs = obs
            mods = {o: {**{key: v[2] for key, v in c.items()}, **items[o].inner} for o, c in cand.items()}
            # "X, increased since the prior study": the comparison is the finding's change attribute
            # ("X, unchanged from the prior" keeps it: an unchanged finding is no change of its own)
            attached = any(m.get("change", "unchanged") != "unchanged" for m in mods.values())
            for k, it in enumerate(items):
                if it.kind == "obs" and attached and it.value == lex.comparison:
                    continue
                if it.kind == "obs":
                    cue = cues.get(k)
                    if cue and cue[1] == "unc":
                        assertion = "uncertain"
                    elif (cue and cue[1] == "neg") or it.absent:
                        assertion = "absent"
                    elif it.hedged:
                        assertion = "uncertain"
                    else:
                        assertion = "present"
                    found = mods.get(k, {})
                    if assertion == "absent" and cue and cue[2] == "resolved":  # "the effusion has resolved"
                        found = {**found, "change": "resolved"}
                    out.append(Entity(text[it.start:it.end], "observation", assertion, it.value,
                                      dict(sorted(found.items())), anat_of.get(k), it.start, it.end))
                elif it.kind == "anat":
                    concept = lex.concepts[it.value or ""]
                    lat = concept.laterality
                    if k and items[k - 1].kind == "lat" and items[k - 1].tok >= it.tok - 1:
                        lat = items[k - 1].value
                    out.append(Entity(text[it.start:it.end], "anatomy", "present", it.value,
                                      {"laterality": lat} if lat else {}, None, it.start, it.end))
        return out


def _is_and(it: _Item) -> bool:
    return it.kind == "conj" and it.value in _AND


def _continues_list(items: list[_Item], k: int) -> bool:
    """After a comma or "and" inside a negation scope: does a bare list of findings go on
    ("no effusion, pneumothorax or consolidation") or does a new positive clause start
    ("no pneumothorax, small left effusion", "no effusion, heart is enlarged")?"""
    conj = False
    while k < len(items) and (items[k].kind == "conj" or (items[k].kind == "word" and items[k].value in _FILLERS)):
        conj = conj or items[k].kind == "conj"
        k += 1
    if k >= len(items):
        return True
    it = items[k]
    if it.kind in ("neg_pre", "unc_pre"):
        return True
    if it.kind != "obs" or it.verb or it.statement:
        return False
    if not conj:  # "no pneumothorax, pleural effusion is present": a verb after the finding starts a clause
        for nxt in items[k + 1:]:
            if nxt.kind in ("comma", "conj", "end"):
                break
            if nxt.kind == "word" and nxt.value in _VERBS:
                return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m evaluation.lexicon "report text"` prints its entities (one JSON line each);
    `radsteer concepts [QUERY]` lists the concepts."""
    import json

    lex = load_lexicon()
    for t in (sys.argv[1:] if argv is None else argv):
        for e in LexiconExtractor(lex).extract_one(t):
            print(json.dumps(e.to_json()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
