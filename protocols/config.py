"""One configuration path: every setting of every step resolved once, in one place.

A setting's value is the **command-line flag** if one was given, else the **protocol's** value (the
protocol being run, or the run directory's frozen `protocol.yaml`), else the **default** defined in
`SETTINGS` below (for a setting the protocol also holds, the schema takes its default from the same
entry, so the two can never disagree). `radsteer run` and every single command (`sweep`,
`evaluate`, `stats`, `report`, `label`, `annotate`, `mine`, ...) resolve a `Config` here and hand it to the
same step functions in `protocols.runner`, so a step run either way does exactly the same thing. A flag
that several commands show is one `Setting` (same name, help and default everywhere); a flag name
that means something else in each command (`--seed`, `--batch-size`) is listed, with why, in
tests/test_config.py.

To add a setting: append one `Setting` to `SETTINGS` — its key (`section.name`, which is also how it is
read: `config.section.name`), its flag, default and help, the commands that show the flag, and the
protocol field that holds it (if any). `add_options(parser, command)` then adds the flag to those
commands and `resolve(...)` fills it in; nothing else needs wiring.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

from steering.errors import RadsteerError

FLAG, PROTOCOL, DEFAULT = "flag", "protocol", "default"


def _judge_default(name: str) -> Any:
    """The judge's defaults are the judge library's own (evaluation.judge.JudgeConfig)."""
    from evaluation.judge import JudgeConfig

    f = {f.name: f for f in fields(JudgeConfig)}[name]
    return None if f.default is MISSING else f.default


def _positive(what: str) -> Callable[[Any], str | None]:
    return lambda v: None if v is None or v >= 1 else f"{what} must be ≥ 1, not {v}"


def _extractor_names() -> list[str]:
    from evaluation.extractors import names

    return list(names())


def _open_unit(v: Any) -> str | None:
    return None if 0 < v < 1 else f"must lie strictly between 0 and 1, not {v}"


@dataclass(frozen=True)
class Setting:
    """One setting: where it can come from, its default, and which commands show its flag."""

    key: str  # "section.name": read as config.section.name
    flags: tuple[str, ...]
    help: str
    commands: tuple[str, ...]
    default: Any = None
    protocol: tuple[str, ...] | None = None  # attribute path in protocols.schema.Protocol
    type: Callable[[str], Any] | None = None
    choices: tuple[Any, ...] | Callable[[], Any] | None = None  # a callable: looked up when the flag is added
    store_true: bool = False
    path: bool = False  # a path: flag values relative to the working directory, protocol values to the protocol
    check: Callable[[Any], str | None] | None = None  # returns an error message, or None when fine
    metavar: str | None = None
    # A yes/no setting with a flag for each answer: `flags` set True, `negative` sets False (one of them,
    # never both); unset, the protocol or the default decides.
    negative: tuple[str, ...] = ()
    negative_help: str = ""

    @property
    def dest(self) -> str:
        return "cfg__" + self.key.replace(".", "__")

    def flag_for(self, value: Any) -> str:
        """The flag that gives `value` (for messages: `--show-automated`, not `--blinded`, for False)."""
        return self.negative[-1] if self.negative and value is False else self.flags[-1]


_EVAL = ("evaluate", "run")
_JUDGE = ("evaluate", "label", "run")  # verdict commands
_CLIENT = (*_JUDGE, "interpret")  # commands that talk to an OpenAI-compatible server through the judge client
_STATS = ("stats", "report", "run")
_PROTOCOL_RUN = ("sweep", "run", "mine", "interpret", "validate")  # take a PROTOCOL; the study is RUNS_DIR/<name>
# every command that opens a study's store (issue 16): each takes --store-url (`label` reads a file, no store)
_OPENS_STUDY = ("sweep", "evaluate", "annotate", "stats", "report", "run", "demo", "mine", "activations",
                "interpret")

SETTINGS: tuple[Setting, ...] = (
    # -- where the study lives ---------------------------------------------------------------
    Setting("study.runs_dir", ("--runs-dir",), "where runs/<name>/ is written", _PROTOCOL_RUN, default="runs"),
    Setting("study.limit", ("--limit",), "only the first N cases (a quick look)", ("sweep", "run", "demo"), type=int,
            check=_positive("--limit")),
    # -- where the tables live, and who generates (steering/store/location.py, steering/distributed.py) --
    Setting("store.url", ("--store-url",),
            "the study's database, e.g. postgresql+psycopg://user@host/db (default: $RADSTEER_STORE_URL, the "
            "URL recorded in the run directory, else RUN_DIR/study.sqlite)",
            _OPENS_STUDY, metavar="URL"),
    Setting("execution.executor", ("--executor",), "local: this process; ray: worker actors "
            "(pip install radsteer[distributed])", ("sweep", "run", "evaluate", "mine"), default="local",
            protocol=("execution", "executor"), choices=("local", "ray")),
    Setting("execution.address", ("--ray-address",), "join this Ray cluster (implies --executor ray; default: "
            "a local Ray for the run)", ("sweep", "run", "evaluate", "mine"), protocol=("execution", "address"), metavar="ADDR"),
    Setting("execution.workers", ("--workers",), "Ray workers", ("sweep", "run", "evaluate", "mine"), default=2, type=int,
            protocol=("execution", "workers"), check=_positive("--workers"), metavar="N"),
    Setting("ui.no_progress", ("--no-progress",), "no progress bars",
            ("sweep", "evaluate", "run", "demo", "mine", "interpret", "activations", "sae"),
            default=False, store_true=True),
    Setting("ui.threads", ("--threads",), "torch CPU threads (default: torch's choice)", ("demo", "sae"),
            type=int, check=_positive("--threads"), metavar="N"),
    # -- evaluate ----------------------------------------------------------------------------
    Setting("evaluate.extractor", ("--extractor",), "entity extraction backend", (*_EVAL, "label"),
            default="lexicon", protocol=("evaluation", "extractor"), choices=_extractor_names),
    Setting("evaluate.radgraph_cache", ("--radgraph-cache",),
            "directory holding the RadGraph model archives (a protocol's path is relative to the protocol file; "
            "default $RADSTEER_RADGRAPH_CACHE, else the radgraph package's cache)", (*_EVAL, "label"),
            protocol=("evaluation", "radgraph_cache"), path=True),
    Setting("evaluate.batch_size", ("--batch-size",), "reports per extraction batch", ("evaluate",), default=64,
            type=int, check=_positive("--batch-size")),
    Setting("label.batch_size", ("--batch-size",), "reports extracted per batch", ("label",), default=256,
            type=int, check=_positive("--batch-size")),
    Setting("evaluate.combine_rule", ("--combine-rule",),
            "combined verdict — agree: a change counts only when both methods see it; judge: the judge decides; "
            "any: either method suffices", _JUDGE, default="agree", choices=("agree", "judge", "any")),
    # -- the LLM judge (any OpenAI-compatible server); the key itself is never a setting ---------
    Setting("judge.base_url", ("--judge-base-url",), "e.g. http://localhost:8000/v1 for vLLM (default: OpenAI)",
            _CLIENT, protocol=("evaluation", "judge", "base_url")),
    Setting("judge.model", ("--judge-model",), "judge model name; giving it turns the judge on", _CLIENT,
            protocol=("evaluation", "judge", "model")),
    Setting("judge.api_key_env", ("--judge-api-key-env",),
            "NAME of the environment variable holding the API key; 'none' for keyless local servers", _CLIENT,
            default=_judge_default("api_key_env"), protocol=("evaluation", "judge", "api_key_env")),
    Setting("judge.concurrency", ("--concurrency",), "parallel judge requests", _CLIENT,
            default=_judge_default("concurrency"), protocol=("evaluation", "judge", "concurrency"), type=int,
            check=_positive("--concurrency")),
    Setting("judge.timeout_s", ("--judge-timeout",), "seconds per request", _CLIENT,
            default=_judge_default("timeout_s"), protocol=("evaluation", "judge", "timeout_s"), type=float),
    Setting("judge.max_retries", ("--judge-max-retries",), "retries on 429/5xx/timeouts", _CLIENT,
            default=_judge_default("max_retries"), protocol=("evaluation", "judge", "max_retries"), type=int),
    Setting("judge.max_calls", ("--judge-max-calls",), "request budget for this run", _CLIENT,
            protocol=("evaluation", "judge", "max_calls"), type=int),
    Setting("judge.max_tokens", ("--judge-max-tokens",), "token budget for this run", _CLIENT,
            protocol=("evaluation", "judge", "max_tokens"), type=int),
    Setting("judge.response_format", ("--judge-response-format",),
            "auto: json_schema, falling back to json_object, then plain text with the schema in the prompt, "
            "once per run when the server refuses a format (llama.cpp does json_schema); or force one", _CLIENT,
            default=_judge_default("response_format"), protocol=("evaluation", "judge", "response_format"),
            choices=("auto", "json_schema", "json_object", "text")),
    Setting("judge.off", ("--no-judge",), "skip the judge even if the protocol configures one", _JUDGE,
            default=False, store_true=True),
    # -- statistics --------------------------------------------------------------------------
    Setting("stats.method", ("--method",), "primary labelling method (default: combined, else entity_diff, ...)",
            _STATS, choices=("entity_diff", "llm_judge", "combined", "radiologist_majority")),
    Setting("stats.null_rate", ("--null-rate",), "p0 of the per-feature binomial tests", _STATS, default=0.05,
            type=float, check=lambda v: _open_unit(v) and f"--null-rate {_open_unit(v)}"),
    Setting("stats.correction", ("--correction",), "multiplicity correction that decides significance", _STATS,
            default="holm", protocol=("report", "multiplicity"), choices=("holm", "fdr_bh")),
    Setting("stats.level", ("--level",), "significance level", _STATS, default=0.05, type=float,
            check=lambda v: _open_unit(v) and f"--level {_open_unit(v)}"),
    Setting("stats.bootstrap", ("--bootstrap",), "bootstrap resamples for Spearman's ρ", _STATS, default=2000,
            type=int, check=lambda v: None if v >= 1 else f"--bootstrap must be a positive number of resamples, not {v}"),
    Setting("stats.seed", ("--seed",), "bootstrap seed", _STATS, default=0, protocol=("seed",), type=int),
    Setting("stats.out", ("--out",), "where to write the tables (default RUN_DIR/stats)", ("stats",), path=True),
    # -- the report --------------------------------------------------------------------------
    Setting("report.title", ("--title",), "report title (default: the run directory's name)", ("report", "run"),
            protocol=("report", "title")),
    Setting("report.examples", ("--examples",), "baseline/steered pairs shown", ("report", "run"), default=12,
            protocol=("report", "examples"), type=int,
            check=lambda v: None if v >= 0 else f"--examples must be ≥ 0, not {v}"),
    Setting("report.output", ("-o", "--output"),
            "HTML file to write (default RUN_DIR/report.html); tables go to <name>_tables/ beside it", ("report",),
            path=True),
    Setting("report.pdf", ("--pdf",), "also write a PDF of the report beside the HTML file", ("report", "run"),
            default=False, store_true=True),
    # -- the annotation app (`radsteer annotate RUN_DIR`: the frozen protocol's `annotation:` section) -----
    Setting("annotate.annotators_file", ("--annotators",),
            "annotators file with hashed passwords (default RUN_DIR/annotators.json; a protocol's path is "
            "relative to the protocol file)", ("annotate",), protocol=("annotation", "annotators_file"), path=True,
            metavar="FILE"),
    Setting("annotate.overlap", ("--overlap",), "fraction of items read by two annotators (agreement)",
            ("annotate",), default=0.2, protocol=("annotation", "overlap"), type=float,
            check=lambda v: None if 0 <= v <= 1 else f"--overlap must lie between 0 and 1, not {v}"),
    Setting("annotate.seed", ("--seed",), "seed of the queue shuffles (recorded with every queue item)",
            ("annotate",), default=0, protocol=("annotation", "seed"), type=int),
    Setting("annotate.disagreements_first", ("--disagreements-first",),
            "put items whose automated methods disagree first in every queue", ("annotate",), default=True,
            protocol=("annotation", "disagreements_first"), negative=("--no-disagreements-first",),
            negative_help="keep the queues' seeded order, disagreements wherever they fall"),
    Setting("annotate.blinded", ("--blinded",),
            "hide the automated labels and the features' F1 from annotators", ("annotate",), default=True,
            protocol=("annotation", "blinded"), negative=("--show-automated",),
            negative_help="show the automated labels (each read records that it was not blinded)"),
)

BY_KEY: Mapping[str, Setting] = MappingProxyType({s.key: s for s in SETTINGS})


def default(key: str) -> Any:
    """The one default of a setting (protocols.schema takes its defaults from here)."""
    return BY_KEY[key].default


# settings of single commands only: their outputs (`run` writes into the run directory), torch threads (demo, sae)
RUN_ONLY_ELSEWHERE = ("stats.out", "report.output", "ui.threads")


def settings_for(command: str) -> list[Setting]:
    """The settings a command resolves: its own flags' — and for `run` (and the demo, which is a run)
    every setting of every step, so each step reads the same keys whichever way it is started."""
    if command in ("run", "demo"):
        sections = {"study", "ui", "evaluate", "judge", "stats", "report", "store", "execution"}
        return [s for s in SETTINGS if command in s.commands
                or (s.key.split(".")[0] in sections and s.key not in RUN_ONLY_ELSEWHERE)]
    return [s for s in SETTINGS if command in s.commands]


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the flags of every setting `command` shows (defaults are filled in by `resolve`), and
    --print-config (see `config_for_args`)."""
    parser.add_argument("--print-config", action="store_true", dest="print_config",
                        help="print every setting this command would use, its value and where it came from "
                             "(flag, protocol or default), then exit")
    for s in SETTINGS:
        if command not in s.commands:
            continue
        if s.negative:  # --x / --no-x: either sets the value, neither leaves it to the protocol or default
            group = parser.add_mutually_exclusive_group()
            yes, no = (" (default)", "") if s.default else ("", " (default)")
            group.add_argument(*s.flags, dest=s.dest, action="store_const", const=True, default=None,
                               help=s.help + yes)
            group.add_argument(*s.negative, dest=s.dest, action="store_const", const=False, default=None,
                               help=s.negative_help + no)
            continue
        shown = "" if s.default is None or s.default is False else f" (default: {s.default})"
        kw: dict[str, Any] = {"dest": s.dest, "help": s.help + shown}
        if s.store_true:
            kw["action"] = "store_true"
            kw["default"] = False
        else:
            kw["default"] = None
            if s.type is not None:
                kw["type"] = s.type
            if s.choices is not None:
                kw["choices"] = s.choices() if callable(s.choices) else s.choices
            if s.metavar:
                kw["metavar"] = s.metavar
            elif s.choices is None:  # what --help shows: the flag's own name, not the internal dest
                kw["metavar"] = s.flags[-1].lstrip("-").replace("-", "_").upper()
        parser.add_argument(*s.flags, **kw)


class _Missing:
    pass


_ABSENT = _Missing()


def _protocol_value(protocol: Any, path: tuple[str, ...]) -> tuple[Any, bool]:
    """The protocol's value at `path` and whether the protocol file says it (else the schema's default)."""
    obj, said = protocol, True
    for name in path:
        if obj is None:
            return _ABSENT, False
        said = said and name in getattr(obj, "model_fields_set", {name})
        obj = getattr(obj, name, _ABSENT)
        if obj is _ABSENT:
            return _ABSENT, False
    return obj, said


@dataclass(frozen=True)
class Config:
    """Every resolved setting (`config.section.name`), where it came from, and the protocol's values."""

    command: str
    values: Mapping[str, Any]
    sources: Mapping[str, str]  # key -> "flag" | "protocol" (the file says it) | "default"
    protocol_values: Mapping[str, Any]  # what the protocol said, where it says anything
    notes: tuple[str, ...] = ()  # e.g. a frozen protocol that could not be read

    def __getattr__(self, section: str) -> SimpleNamespace:
        prefix = section + "."
        found = {k[len(prefix):]: v for k, v in self.values.items() if k.startswith(prefix)}
        if not found:
            raise AttributeError(section)
        return SimpleNamespace(**found)

    def get(self, key: str, fallback: Any = None) -> Any:
        return self.values.get(key, fallback)

    def deviations(self) -> list[str]:
        """Settings where a command-line flag replaced the protocol's value (the report lists them)."""
        out = list(self.notes)
        for key, value in self.values.items():
            if self.sources.get(key) == FLAG and key in self.protocol_values and self.protocol_values[key] != value:
                flag = BY_KEY[key].flag_for(value)
                out.append(f"{key}: {value!r} from {flag} instead of the protocol's {self.protocol_values[key]!r}")
        return out

    def describe(self) -> list[dict[str, Any]]:
        """Rows (setting, value, source) for reports and logs."""
        return [{"setting": k, "value": v, "source": self.sources[k]} for k, v in sorted(self.values.items())]

    def explain(self, keys: Iterable[str] | None = None) -> str:
        """One line saying where each value came from, e.g. `overlap=0.5 (protocol), blinded=False
        (--show-automated)`: what a command prints when it starts work a reader must be able to audit."""
        parts = []
        for key in keys if keys is not None else sorted(self.values):
            value, source = self.values[key], self.sources[key]
            where = BY_KEY[key].flag_for(value) if source == FLAG else source
            parts.append(f"{key.split('.', 1)[1]}={value!r} ({where})")
        return ", ".join(parts)

    def judge_config(self):
        """The judge's JudgeConfig, or None when no judge model is set (or --no-judge)."""
        if self.values.get("judge.off"):
            return None
        keys = [k for k in self.values if k.startswith("judge.") and k != "judge.off"]
        if self.values.get("judge.model") is None:
            given = [BY_KEY[k].flag_for(self.values[k]) for k in keys if self.sources[k] == FLAG]
            if given:
                raise RadsteerError(f"judge options ({', '.join(given)}) were given without --judge-model: "
                                    f"name the judge model")
            return None
        from evaluation.judge import JudgeConfig

        data = {k.split(".", 1)[1]: self.values[k] for k in keys}
        data = {k: v for k, v in data.items() if v is not None or k == "api_key_env"}
        if str(data.get("api_key_env", "")).lower() == "none":
            data["api_key_env"] = None
        return JudgeConfig.from_mapping(data, where="judge")


def resolve(
    command: str,
    args: argparse.Namespace | None = None,
    *,
    protocol: Any = None,
    protocol_dir: str | os.PathLike[str] | None = None,
    flags: Mapping[str, Any] | None = None,
    keys: Iterable[str] | None = None,
    notes: Iterable[str] = (),
) -> Config:
    """Resolve the settings of `command` (or the given `keys`): flag, else protocol, else default.

    `protocol` is a validated `protocols.schema.Protocol` (or None); its relative paths are taken
    relative to `protocol_dir`. `flags` gives flag values by key, for callers without argparse.
    """
    chosen = [BY_KEY[k] for k in keys] if keys is not None else settings_for(command)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    proto_values: dict[str, Any] = {}
    base = Path(protocol_dir) if protocol_dir is not None else Path.cwd()
    for s in chosen:
        given = _ABSENT
        if flags is not None and flags.get(s.key) is not None:
            given = flags[s.key]
        elif args is not None and hasattr(args, s.dest):
            v = getattr(args, s.dest)
            if (v is not None and not s.store_true) or (s.store_true and v):
                given = v
        pv, said = _protocol_value(protocol, s.protocol) if (s.protocol and protocol is not None) else (_ABSENT, False)
        if pv is not _ABSENT and s.path and pv is not None:
            q = Path(str(pv)).expanduser()
            pv = str(q if q.is_absolute() else (base / q).resolve())
        if pv is not _ABSENT:
            proto_values[s.key] = pv
        if given is not _ABSENT:
            value, source = given, FLAG
            if s.path and value is not None:
                value = str(Path(str(value)).expanduser().resolve())
        elif pv is not _ABSENT:  # a field the file leaves out holds the schema's default, which is ours
            value, source = pv, PROTOCOL if said else DEFAULT
        else:
            value, source = s.default, DEFAULT
        if s.check is not None and value is not None:
            msg = s.check(value)
            if msg:
                raise RadsteerError(msg if msg.startswith("-") else f"{s.flags[-1]}: {msg}")
        values[s.key], sources[s.key] = value, source
    return Config(command, MappingProxyType(values), MappingProxyType(sources), MappingProxyType(proto_values),
                  tuple(notes))


def config_for_args(command: str, args: argparse.Namespace) -> Config:
    """The settings `command` would run with, resolved the way the command resolves them: against its
    PROTOCOL argument, else RUN_DIR's frozen protocol.yaml, else flags and defaults alone."""
    protocol = getattr(args, "protocol", None)
    if protocol is not None and command not in ("demo",):
        from protocols.loader import load_protocol

        loaded = load_protocol(protocol)
        return resolve(command, args, protocol=loaded.protocol, protocol_dir=loaded.base_dir)
    run_dir = getattr(args, "run_dir", None)
    if run_dir is not None:
        if not (Path(run_dir) / "protocol.yaml").exists():
            return resolve(command, args, notes=[f"{run_dir} has no protocol.yaml: settings are flags and defaults"])
        return resolve_for_run_dir(command, args, run_dir)
    return resolve(command, args)


def print_config(config: Config, out: Any = None) -> None:
    """`--print-config`: one line per setting (`key = value  (source)`), then any deviations/notes."""
    import sys

    out = out or sys.stdout
    rows = config.describe()
    width = max((len(r["setting"]) for r in rows), default=0)
    for r in rows:
        source = BY_KEY[r["setting"]].flag_for(r["value"]) if r["source"] == FLAG else r["source"]
        print(f"{r['setting']:<{width}} = {r['value']!r}  ({source})", file=out)
    for line in config.deviations():
        print(f"note: {line}", file=out)


def run_dir_protocol(run_dir: str | os.PathLike[str]) -> tuple[Any, Path | None]:
    """A run directory's frozen protocol (validated) and the directory its relative paths are relative to:
    the original protocol file's (recorded in manifest.json), else the run directory. (None, None) without one.

    Environment variables a frozen protocol names but this shell lacks are left as written: reading the
    statistics settings of a study must not need the machine that ran it.
    """
    from protocols.loader import load_protocol
    from steering.store import read_manifest

    run_dir = Path(run_dir)
    frozen = run_dir / "protocol.yaml"
    if not frozen.exists():
        return None, None
    try:
        original = read_manifest(run_dir).get("protocol_path")
    except ValueError:
        original = None
    base = Path(original).parent if original else run_dir
    # relative paths the loader follows (features.select's interpretations.csv, features.items_file)
    # are the original protocol's, not the run directory's
    loaded = load_protocol(frozen, strict_env=False, base=base)
    return loaded.protocol, base


def resolve_for_run_dir(command: str, args: argparse.Namespace | None, run_dir: str | os.PathLike[str],
                        *, strict: bool | None = None, **kw: Any) -> Config:
    """`resolve` with the run directory's frozen protocol as the protocol layer.

    A frozen protocol that does not validate stops `evaluate` (strict: its settings decide labels); for
    `stats` and `report` (not strict) its settings are left out and the report says so.
    """
    strict = command not in ("stats", "report") if strict is None else strict
    try:
        protocol, base = run_dir_protocol(run_dir)
    except RadsteerError as exc:
        if strict:
            raise
        return resolve(command, args, notes=[f"the run's protocol.yaml was not applied ({exc}): "
                                             f"settings are flags and defaults"], **kw)
    return resolve(command, args, protocol=protocol, protocol_dir=base, **kw)
