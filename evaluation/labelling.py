"""Label baseline/steered report pairs produced anywhere (the engine of `radsteer label`).

Input rows: `id`, `baseline`, `steered`, `target` (a concept id, name or synonym, or a list of
them), `direction` (+1 / −1), optional `description`; any other field is refused (a misspelt
`target` must not pass unnoticed). Output rows keep `id` and add
`on_target`, `off_target`, `label`, `evidence`.

Why it is shaped this way: extraction is batched and de-duplicated (many steered rows share one
baseline), and a judge plugs in beside the entity diff without changing anything here — pass
`judge=` (any callable taking the pairs and returning one verdict mapping per pair) and
optionally `combine=` (entity-diff verdict, judge verdict → the row's top-level verdict).
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from evaluation.diff import diff_entities
from evaluation.entities import Entity, EntityExtractor
from evaluation.extractors import ExtractorError, get_extractor
from evaluation.lexicon import Lexicon, UnknownConceptError, load_lexicon, resolve_concepts
from evaluation.targets import TargetMatch, match_targets, parse_direction
from steering.errors import RadsteerError
from steering.jsonl import iter_jsonl

REQUIRED_FIELDS = ("id", "baseline", "steered", "target", "direction")
KNOWN_FIELDS = (*REQUIRED_FIELDS, "description")


@dataclass(frozen=True)
class LabelPair:
    """One validated input row."""

    id: str | int
    baseline: str
    steered: str
    targets: tuple[str, ...]  # concept ids
    direction: int
    description: str | None = None
    target_names: tuple[str, ...] = ()  # as written in the input


class PairJudge(Protocol):
    """What `label_pairs(judge=...)` calls: one verdict mapping per pair, in order, each with
    `on_target`, `off_target`, `label`, `evidence` (and `error` when it failed)."""

    def __call__(self, pairs: Sequence[LabelPair]) -> Sequence[Mapping[str, Any]]: ...


class PairError(RadsteerError):
    """A malformed input row; `field` names the offending field (None for the row itself)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"field {field!r}: {message}" if field else message)


def parse_pair(row: Any, lexicon: Lexicon | None = None) -> LabelPair:
    """Validate one input row (a JSON object) into a LabelPair; raises PairError naming the field."""
    if not isinstance(row, dict):
        raise PairError(f"each row must be a JSON object, got {type(row).__name__}")
    unknown = [f for f in row if f not in KNOWN_FIELDS]
    if unknown:  # a misspelt `target` or `direction` must not pass unnoticed
        hints = [f"{f!r}" + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(
            str(f), KNOWN_FIELDS, n=1, cutoff=0.6)) else "") for f in unknown]
        raise PairError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                        f"rows take {', '.join(KNOWN_FIELDS)}")
    for f in REQUIRED_FIELDS:
        if f not in row or row[f] is None:
            raise PairError(f"missing field {f!r} (rows need {', '.join(REQUIRED_FIELDS)})")
    rid = row["id"]
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or (isinstance(rid, str) and not rid.strip()):
        raise PairError("must be a non-empty string or an integer", "id")
    for f in ("baseline", "steered"):
        if not isinstance(row[f], str):
            raise PairError(f"must be a string (the report text), got {type(row[f]).__name__}", f)
    names = row["target"]
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise PairError("must be a concept name or a non-empty list of concept names", "target")
    try:
        targets = resolve_concepts(names, lexicon)
    except UnknownConceptError as exc:
        raise PairError(str(exc), "target") from exc
    try:
        direction = parse_direction(row["direction"])
    except RadsteerError as exc:
        raise PairError(str(exc), "direction") from exc
    desc = row.get("description")
    if desc is not None and not isinstance(desc, str):
        raise PairError("must be a string", "description")
    return LabelPair(rid, row["baseline"], row["steered"], tuple(targets), direction, desc, tuple(names))


def read_pairs(path: str | Path, lexicon: Lexicon | None = None) -> list[LabelPair]:
    """All rows of a JSONL file, validated; the first bad row raises a one-line error naming
    the file, the line and the field."""
    p = Path(path)
    lex = lexicon or load_lexicon()
    pairs: list[LabelPair] = []
    first_line: dict[str | int, int] = {}
    for n, where, row in iter_jsonl(p, what="pairs file"):
        try:
            pair = parse_pair(row, lex)
        except PairError as exc:
            raise RadsteerError(f"{where}: {exc}") from exc
        if pair.id in first_line:
            raise RadsteerError(f"{where}: field 'id': duplicate id {pair.id!r} (first on line {first_line[pair.id]})")
        first_line[pair.id] = n
        pairs.append(pair)
    if not pairs:
        raise RadsteerError(f"{p}: no rows (expected one JSON object per line with {', '.join(REQUIRED_FIELDS)})")
    return pairs


def _extract_unique(extractor: EntityExtractor, texts: Sequence[str]) -> dict[str, list[Entity]]:
    unique = list(dict.fromkeys(texts))
    return dict(zip(unique, extractor.extract(unique), strict=True))


def entity_verdicts(pairs: Sequence[LabelPair], extractor: EntityExtractor, *, batch_size: int = 256,
                    progress: bool = False, lexicon: Lexicon | None = None) -> list[TargetMatch]:
    """The entity-diff verdict of every pair, extracting in de-duplicated batches."""
    from tqdm import tqdm

    lex = lexicon or load_lexicon()
    out: list[TargetMatch] = []
    with tqdm(total=len(pairs), disable=not progress, unit="pair", desc="labelling", file=sys.stderr) as bar:
        for lo in range(0, len(pairs), max(1, batch_size)):
            chunk = pairs[lo:lo + batch_size]
            ents = _extract_unique(extractor, [t for p in chunk for t in (p.baseline, p.steered)])
            for p in chunk:
                diff = diff_entities(ents[p.baseline], ents[p.steered], lex)
                out.append(match_targets(diff, p.targets, p.direction, lex))
            bar.update(len(chunk))
    return out


def label_pairs(rows: Iterable[LabelPair | Mapping[str, Any]], extractor: EntityExtractor | str = "lexicon",
                judge: PairJudge | None = None, *,
                combine: Callable[[dict[str, Any], Mapping[str, Any]], dict[str, Any]] | None = None,
                batch_size: int = 256, progress: bool = False) -> list[dict[str, Any]]:
    """Output rows ({id, on_target, off_target, label, evidence, method}) for input rows.

    Without a judge the verdict is the entity diff's. With one, both verdicts are kept under
    `verdicts` and the top-level verdict is `combine(entity_diff, llm_judge)` when given
    (method "combined"), else the entity diff's.
    """
    lex = load_lexicon()
    pairs = []
    for i, r in enumerate(rows):
        if isinstance(r, LabelPair):
            pairs.append(r)
            continue
        try:
            pairs.append(parse_pair(dict(r), lex))
        except PairError as exc:
            raise RadsteerError(f"row {i}: {exc}") from exc
    try:
        ex = get_extractor(extractor) if isinstance(extractor, str) else extractor
    except ExtractorError as exc:  # a misspelt name or a broken plugin: one line, not a traceback
        raise RadsteerError(str(exc)) from exc
    verdicts = entity_verdicts(pairs, ex, batch_size=batch_size, progress=progress, lexicon=lex)
    judged = list(judge(pairs)) if judge is not None else None
    if judged is not None and len(judged) != len(pairs):
        raise RuntimeError(f"the judge returned {len(judged)} verdicts for {len(pairs)} pairs")
    out = []
    for k, (p, v) in enumerate(zip(pairs, verdicts, strict=True)):
        ed = {"method": "entity_diff", **v.to_json()}
        ed["evidence"]["extractor"] = getattr(ex, "name", type(ex).__name__)
        row: dict[str, Any] = {"id": p.id, **{k2: ed[k2] for k2 in ("on_target", "off_target", "label", "evidence")},
                               "method": "entity_diff"}
        if judged is not None:
            jd = dict(judged[k])
            row["verdicts"] = {"entity_diff": ed, "llm_judge": jd}
            if combine is not None:
                top = combine(ed, jd)
                row.update({k2: top.get(k2) for k2 in ("on_target", "off_target", "label", "evidence")})
                row["method"] = "combined"
        out.append(row)
    return out


def write_jsonl_atomic(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows as JSONL to a temporary file beside `path`, then rename: never a half file."""
    p = Path(path)
    if not p.parent.is_dir():
        raise RadsteerError(f"output folder {p.parent} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
