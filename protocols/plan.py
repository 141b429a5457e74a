"""Checks and cost plans that need no model weights and write nothing.

`check_study` is what `radsteer validate` prints and what `radsteer run` does first, so every
protocol error (a missing file, an unknown feature id, an SAE as wide as some other model, a layer
the model lacks) stops a run before a model is loaded or a run directory is created.
`plan_costs` is `radsteer run --dry-run`: what the run would spend, counted the way the run
itself counts (rows generated, tokens, judge requests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.model_facts import ModelShape, model_shape
from protocols.study import Study
from steering.errors import RadsteerError
from steering.store import StudyStore, has_study, read_manifest


@dataclass
class CheckedStudy:
    study: Study
    shape: ModelShape
    feature_ids: list[str]
    vectors: str  # "sae", or for concept vectors "current" / "missing" / "stale"
    bank_width: int | None
    n_bank_features: int | None
    warnings: list[str] = field(default_factory=list)


def model_device(study: Study, execution: Any = None) -> str:
    """The device the model will run on: this machine's `model.device` — or, when Ray workers load
    it (`execution`: default the protocol's section), the device a worker picks (its own GPU with
    `gpus_per_worker`, else the CPU): a driver without a GPU may send a sweep to GPU workers."""
    from protocols.execution import execution_options
    from steering.distributed import worker_device

    execution = execution if execution is not None else execution_options(study)
    if execution.executor != "ray":
        return study.check_device()
    try:
        return worker_device(study.protocol.model.device, ["0"] if execution.gpus_per_worker else [])
    except RadsteerError as exc:
        raise RadsteerError(f"{study.loaded.where('model', 'device')}: {exc}") from None


def check_study(study: Study, execution: Any = None) -> CheckedStudy:
    """Every check short of generating; raises RadsteerError naming the place of the first error.
    `execution` (protocols.execution.ExecutionOptions; default the protocol's) says where the model runs."""
    p, loaded = study.protocol, study.loaded
    _ = study.cases  # readable, valid JSONL, unique ids
    if not study.cases:
        raise RadsteerError(f"{loaded.where('cases')}: no cases left after the split ({p.cases.split.use}) "
                            f"and limit")
    m = p.model
    device = model_device(study, execution)
    try:
        shape = model_shape(m.kind, loaded.resolve(m.path) if m.path else None)
    except RadsteerError as exc:
        raise RadsteerError(f"{loaded.where('model', 'path' if m.path else 'kind')}: {exc}") from None
    model_name = _model_name(study)
    warnings: list[str] = []
    state = "sae"
    if p.features.source == "concept":
        state = study.concept_vectors_state()
        if state != "current":
            if not p.features.concepts:
                study.check_concept_vectors()  # raises: nothing to build them from
            study.check_vectors_target()  # raises: features.path holds files radsteer did not write
            warnings.append(f"concept vectors are {state} at {study.bank_path()}: `radsteer run` builds them "
                            f"(or `radsteer vectors build {loaded.path}`)")
    if state in ("sae", "current"):
        bank = study.load_bank()
        ids = study.feature_ids(bank)
        study.check_width(bank, shape.hidden_size, shape.num_layers, model_name)
        from steering.adapters import resolve_dtype

        study.check_pushes(bank, resolve_dtype(m.dtype, device))
        width, n_bank = bank.d_model, bank.n_features
    else:  # vectors will be built with the model itself: as wide as it by construction
        ids = [f.id for f in p.features.items]
        study.check_layer(shape.num_layers, model_name)
        width, n_bank = None, None
    j = p.evaluation.judge
    if j is not None and j.api_key_env and not os.environ.get(j.api_key_env):
        warnings.append(f"the judge's key variable {j.api_key_env} is not set: export it before `radsteer run`")
    a = p.annotation.annotators_file
    if a and not loaded.resolve(a).exists():
        raise RadsteerError(f"{loaded.where('annotation', 'annotators_file')}: file not found: {loaded.resolve(a)}")
    return CheckedStudy(study, shape, ids, state, width, n_bank, warnings)


def _model_name(study: Study) -> str:
    """The name the model's adapter will carry (concept vectors record it)."""
    m = study.protocol.model
    if m.kind == "demo":
        from steering.demo_model import DEMO_NAME

        return DEMO_NAME
    return study.loaded.resolve(m.path or "").name


@dataclass
class CostPlan:
    """What `radsteer run` would spend; the run reports the same three numbers when it ends."""

    planned_rows: int
    stored_rows: int
    rows_to_generate: int
    max_new_tokens: int
    steered_to_judge: int  # steered rows without an error-free verdict of this judge model
    judge: str | None

    @property
    def max_tokens(self) -> int:
        return self.rows_to_generate * self.max_new_tokens

    def lines(self) -> list[str]:
        out = [
            f"rows: {self.rows_to_generate} to generate ({self.planned_rows} planned, {self.stored_rows} already stored)",
            f"generated tokens: at most {self.max_tokens} ({self.rows_to_generate} rows × "
            f"{self.max_new_tokens} max_new_tokens; rows that stop at end-of-text use fewer)",
        ]
        if self.judge is None:
            out.append("judge calls: 0 (no judge in this protocol)")
        else:
            out.append(f"judge calls: at most {self.steered_to_judge} to {self.judge} (one per steered row not yet "
                       f"judged; identical report pairs share one call, retries add calls)")
        return out


def plan_costs(checked: CheckedStudy, config=None) -> CostPlan:
    """Count the rows, tokens and judge calls of a run without loading a model or writing
    (`config`: the run's resolved settings, whose judge may differ from the protocol's)."""
    from steering.plan import plan_rows

    study = checked.study
    p = study.protocol
    rows = plan_rows(list(study.cases), checked.feature_ids, p.alphas)
    stored: set[tuple[str, str, float]] = set()
    judged: set[tuple[str, str, float]] = set()
    if config is not None:
        judge_config = config.judge_config()
        judge = judge_config.model if judge_config is not None else None
    else:
        judge = p.evaluation.judge.model if p.evaluation.judge is not None else None
    if has_study(study.run_dir):
        # check_run_dir has ensured the same protocol, hence the same settings hash as recorded
        settings_hash = read_manifest(study.run_dir).get("settings_hash")
        with StudyStore.open(study.run_dir) as store:
            if settings_hash:
                stored = store.generation_keys(settings_hash)
            if judge is not None:
                gens = {g["id"]: (g["case_id"], g["feature_id"], float(g["alpha"]))
                        for g in store.rows("generations", settings_hash=settings_hash)}
                judged = {gens[v["generation_id"]] for v in store.rows("verdicts", method="llm_judge")
                          if not v.get("error") and v.get("judge_model") == judge and v["generation_id"] in gens}
    todo = [r for r in rows if r.key() not in stored]
    steered = [r for r in rows if not r.is_baseline]
    return CostPlan(
        planned_rows=len(rows), stored_rows=len(rows) - len(todo), rows_to_generate=len(todo),
        max_new_tokens=p.generation.max_new_tokens,
        steered_to_judge=sum(1 for r in steered if r.key() not in judged) if judge else 0, judge=judge,
    )


def describe(checked: CheckedStudy) -> list[str]:
    """The OK summary of `radsteer validate`."""
    study, p = checked.study, checked.study.protocol
    splits: dict[str, int] = {}
    for c in study.cases.values():
        splits[c["split"]] = splits.get(c["split"], 0) + 1
    steered = [a for a in p.alphas if a != 0]
    s = checked.shape
    bank = (f"{checked.n_bank_features} vectors × {checked.bank_width}" if checked.bank_width is not None
            else f"concept vectors {checked.vectors} (built on first run)")
    judge = p.evaluation.judge
    return [
        f"protocol {p.name}: {study.loaded.path} (hash {study.loaded.canonical_hash()[:12]})",
        f"model: {p.model.kind}{' ' + str(study.loaded.resolve(p.model.path)) if p.model.path else ''} — hidden size "
        f"{s.hidden_size}, {s.num_layers} layers (from {Path(s.source).name}); steering layer {p.layer}",
        f"features: {len(checked.feature_ids)} ({p.features.source}: {bank}) at {study.bank_path()}",
        f"α: {', '.join(f'{a:g}' for a in p.alphas)}; positions {p.steering.positions}; "
        f"{'sampling' if p.generation.do_sample else 'greedy'}, {p.generation.max_new_tokens} new tokens",
        f"cases: {len(study.cases)} ({', '.join(f'{k} {v}' for k, v in sorted(splits.items()))}) from "
        f"{study.loaded.resolve(p.cases.path)}",
        f"rows: {len(study.cases) * (1 + len(checked.feature_ids) * len(steered))} "
        f"({len(study.cases)} baselines + {len(study.cases)} × {len(checked.feature_ids)} features × {len(steered)} α)",
        f"evaluation: {p.evaluation.extractor}" + (f" + judge {judge.model}" if judge else ", no judge"),
        f"run directory: {study.run_dir}",
    ]
