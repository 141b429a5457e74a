"""Load a protocol YAML file; every error names the file, the line and the field."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from protocols.schema import Protocol
from steering.errors import RadsteerError
from steering.jsonl import iter_jsonl
from steering.store import stable_hash

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class LoadedProtocol:
    protocol: Protocol
    path: Path
    text: str  # the file as written, frozen into the run directory
    lines: dict[tuple, int] = field(default_factory=dict, repr=False)  # key path → line

    def where(self, *loc: str | int) -> str:
        """`file:line: field` for a place in the protocol, the prefix of every error about it."""
        return f"{self.path}:{_line_of(self.lines, loc)}: {_dotted(loc)}"

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, p: str | os.PathLike[str]) -> Path:
        """Paths in a protocol are relative to the protocol file."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else (self.base_dir / q).resolve()

    def canonical(self) -> dict[str, Any]:
        # how a sweep is executed (local / Ray) does not change what the study is
        out = self.protocol.model_dump(mode="json", exclude={"execution"})
        if not out["model"].get("grounded"):  # protocols written before model.grounded keep their hash
            out["model"].pop("grounded", None)
        return out

    def canonical_hash(self) -> str:
        """Hash of the validated protocol (defaults filled in, key order irrelevant)."""
        return stable_hash(self.canonical())


def _line_index(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each key path of a YAML document to its 1-based line."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _line_index(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out)
    return out


def refuse_duplicate_keys(node: yaml.Node | None, file: Path | str) -> None:
    """PyYAML lets the last of two equal keys win silently (`layer: 0` … `layer: 2`); refuse them."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and key in seen:
                raise RadsteerError(f"{file}:{line}: duplicate key {key!r} (first on line {seen[key]}); "
                                    f"keep one of them")
            seen[key] = line
            refuse_duplicate_keys(value_node, file)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            refuse_duplicate_keys(item, file)


def _line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _expand_env(value: Any, path: tuple, file: Path, lines: dict[tuple, int], strict: bool = True) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v, (*path, k), file, lines, strict) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*path, i), file, lines, strict) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        if not strict:
            return m.group(0)
        raise RadsteerError(
            f"{file}:{_line_of(lines, path)}: {_dotted(path)}: environment variable {name} is not set"
        )

    return _ENV.sub(sub, value)


def load_protocol(path: str | os.PathLike[str], *, strict_env: bool = True,
                  base: str | os.PathLike[str] | None = None) -> LoadedProtocol:
    """Load and validate; `strict_env=False` leaves unset ${VARS} as written (reading a frozen
    protocol's settings on a machine that lacks the run's environment). `base`: the directory that
    `features.items_file` and `features.select.interpretations` are relative to (default: the file's;
    a run directory's frozen copy passes its original protocol's)."""
    file = Path(path)
    rel = Path(base) if base is not None else file.parent
    if not file.exists():
        raise RadsteerError(f"protocol file not found: {file}")
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise RadsteerError(f"cannot read protocol {file}: {exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else str(file)
        raise RadsteerError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise RadsteerError(f"{file}: a protocol must be a YAML mapping of fields")
    refuse_duplicate_keys(node, file)
    lines = _line_index(node) if node is not None else {}
    data = _expand_env(data, (), file, lines, strict_env)
    _merge_items_file(data, file, lines, rel)
    _merge_selection(data, file, lines, rel)
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise RadsteerError(f"{file}:{_line_of(lines, loc)}: {_dotted(loc)}: {msg}{more}") from None
    for loc, msg in _cross_checks(protocol):
        raise RadsteerError(f"{file}:{_line_of(lines, loc)}: {_dotted(loc)}: {msg}")
    return LoadedProtocol(protocol=protocol, path=file.resolve(), text=text, lines=lines)


def _merge_items_file(data: dict[str, Any], file: Path, lines: dict[tuple, int], rel: Path) -> None:
    """Append the items of `features.items_file` (YAML list or JSONL) to `features.items`."""
    features = data.get("features")
    if not isinstance(features, dict) or not features.get("items_file"):
        return
    where = f"{file}:{_line_of(lines, ('features', 'items_file'))}: features.items_file"
    path = Path(str(features["items_file"])).expanduser()
    path = path if path.is_absolute() else rel / path
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise RadsteerError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    from protocols.schema import FeatureSpec

    items: list[tuple[int, Any]] = []
    if path.suffix == ".jsonl":
        items = [(n, obj) for n, _where, obj in iter_jsonl(path, what="features file")]
    else:
        try:
            loaded = yaml.safe_load(text)
            refuse_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), path)
        except yaml.YAMLError as exc:
            raise RadsteerError(f"{path}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
        if not isinstance(loaded, list):
            raise RadsteerError(f"{path}: must hold a list of features ({{id, description, targets}})")
        items = [(i + 1, item) for i, item in enumerate(loaded)]
    from evaluation.vocabulary import UnknownConceptError, load_vocabulary

    for n, item in items:
        label = "line" if path.suffix == ".jsonl" else "item"
        try:
            spec = FeatureSpec.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise RadsteerError(f"{path}: {label} {n}: {_dotted(tuple(err['loc']))}: {err['msg']}") from None
        for j, name in enumerate(spec.targets):  # named here, with the file's own line
            try:
                load_vocabulary().resolve_one(name)
            except UnknownConceptError as exc:
                raise RadsteerError(f"{path}: {label} {n}: targets[{j}]: {exc}") from None
    features["items"] = [*(features.get("items") or []), *(item for _, item in items)]


def _merge_selection(data: dict[str, Any], file: Path, lines: dict[tuple, int], rel: Path) -> None:
    """Append the features chosen by `features.select` from an interpretations.csv to `features.items`
    (explicit items first and unchanged; the chosen ones in order of F1)."""
    features = data.get("features")
    if not isinstance(features, dict) or not isinstance(features.get("select"), dict):
        return
    from protocols.schema import FeatureSelect
    from protocols.selection import select_features

    try:
        spec = FeatureSelect.model_validate(features["select"])
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ("features", "select", *err["loc"])
        raise RadsteerError(f"{file}:{_line_of(lines, loc)}: {_dotted(loc)}: "
                            f"{err['msg'].removeprefix('Value error, ')}") from None
    where = f"{file}:{_line_of(lines, ('features', 'select', 'interpretations'))}: features.select.interpretations"
    path = Path(spec.interpretations).expanduser()
    path = path if path.is_absolute() else rel / path
    explicit = {str(i.get("id")) for i in (features.get("items") or []) if isinstance(i, dict)}
    chosen = select_features(path, spec, where=where, exclude=explicit)
    features["items"] = [*(features.get("items") or []), *chosen]


def _cross_checks(p: Protocol) -> list[tuple[tuple, str]]:
    """Errors that involve more than one field, each with the place to fix."""
    out: list[tuple[tuple, str]] = []
    fs = p.features
    if fs.source == "concept" and fs.concepts:
        known = [c.id for c in fs.concepts]
        for i, item in enumerate(fs.items):
            if item.id not in known:
                out.append((("features", "items", i, "id"),
                            f"unknown feature id {item.id!r}: not among features.concepts ({', '.join(known)})"))
    if p.layer < 0:
        out.append((("layer",), f"layer must be ≥ 0 (0-based index of the decoder layer), not {p.layer}"))
    from protocols.targets import target_errors

    out.extend(target_errors(p))  # unknown target concepts, with the nearest known names
    return out
