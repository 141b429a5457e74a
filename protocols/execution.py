"""Which executor runs a study's per-item work: this process (`local`, the default) or Ray workers.

The protocol's `execution:` section sets it, command-line flags override it. One pool of Ray
actors (steering.distributed.RayPool) serves every command; what differs is each worker's job:
- sweep: each worker rebuilds the study's engine from the protocol file (`build_worker_engine`),
  on the GPU Ray gave it; the driver loads no model, records the manifest from the workers'
  engine and dispatches whole cases;
- evaluate: each worker builds its extractor and judge once (evaluation.pipeline.EvaluateJob)
  and labels the steered generations of whole cases; the driver then makes the combined verdicts;
- mine: each worker loads the model once (`MiningJob`) and mines whole planning chunks of the
  corpus into a state of its own; the driver merges the states as they come (top-k of top-k's,
  ties to the earlier document: the local result), checkpoints them like a local run, and one
  worker writes the contexts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from functools import partial
from typing import Any

from protocols.study import Study
from steering.distributed import (
    ExecutionOptions,
    RayPool,
    RaySweep,
    RaySweepReport,
    assigned_gpu_ids,
    cases_per_shard,
    check_store_for_ray,
    shard,
    worker_device,
)
from steering.errors import RadsteerError
from steering.store import StudyStore, resolve_url


def execution_options(study: Study | None, config: Any = None, *, protocol: Any = None) -> ExecutionOptions:
    """The protocol's `execution:` section (the study's, or `protocol`, e.g. a run directory's frozen
    one), with the resolved --executor / --ray-address / --workers (protocols.config) on top; an
    address alone means Ray."""
    protocol = study.protocol if study is not None else protocol
    section = protocol.execution.model_dump() if protocol is not None else {}
    opts = ExecutionOptions(**{f.name: section[f.name] for f in fields(ExecutionOptions) if f.name in section})
    if config is not None:
        over = {"executor": config.get("execution.executor"), "address": config.get("execution.address"),
                "workers": config.get("execution.workers")}
        opts = replace(opts, **{k: v for k, v in over.items() if v is not None})
        if opts.address and config.sources.get("execution.executor") != "flag":
            opts = replace(opts, executor="ray")
    return opts


def build_worker_engine(protocol_path: str, runs_dir: str, limit: int | None) -> Any:
    """Run inside each Ray worker: the study's engine, exactly as the local executor builds it."""
    study = Study.from_protocol(protocol_path, runs_dir, limit=limit)
    bank = study.load_bank()
    adapter = study.load_adapter(device=worker_device(study.protocol.model.device, assigned_gpu_ids()))
    return study.engine(adapter, bank)


def sweep_on_ray(study: Study, options: ExecutionOptions, *, progress: bool = True,
                 on_workers: Callable[[list[int]], None] | None = None) -> RaySweepReport:
    """The whole sweep on Ray workers; concept vectors must be current (built beforehand)."""
    study.check_run_dir()
    check_store_for_ray(resolve_url(study.run_dir), options)  # before anything is written
    _ = study.cases  # read and check the cases before any worker starts
    with study.open_store() as store:
        url = store.url
    factory = partial(build_worker_engine, str(study.loaded.path.resolve()), str(study.run_dir.parent.resolve()),
                      study.limit)
    with RaySweep(factory, url, options) as ray_sweep:  # the workers load the model while this plans the rows
        bank = study.load_bank()
        rows = study.planned_rows(bank)

        def ready(info) -> None:
            with study.open_store() as store:
                study.record(store, info, bank)

        return ray_sweep.run(study.cases, rows, progress=progress, on_ready=ready, on_workers=on_workers)


def evaluate_on_ray(store_url: str, options: ExecutionOptions, *, extractor: str,
                    extractor_options: Mapping[str, Any], judge: Any, combine_rule: str, batch_size: int,
                    progress: bool = True, on_workers: Callable[[list[int]], None] | None = None):
    """Entity-diff and judge verdicts on Ray workers, shards of whole cases; then the combined
    verdicts here. Returns (EvaluationSummary, worker restarts). `judge` is the driver's LLMJudge
    (its key already read): the workers build their own from its config and their own environment,
    and their counts are added to it, so its outcome line covers the whole run."""
    from tqdm.auto import tqdm

    from evaluation.pipeline import EvaluateJob, EvaluationSummary, Evaluator

    check_store_for_ray(store_url, options)
    jc = judge.config if judge is not None else None
    if jc is not None and (jc.max_calls is not None or jc.max_tokens is not None):
        raise RadsteerError("--judge-max-calls / --judge-max-tokens are one budget for the whole run, which Ray "
                            "workers cannot share: run evaluate with --executor local, or without a budget")
    with StudyStore(store_url) as store:
        rows = store.generations_with_baselines().to_dict("records")
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_case.setdefault(str(r["case_id"]), []).append(r)
    order = sorted(by_case)
    per_task = cases_per_shard([len(by_case[c]) for c in order], options)
    parts = [[r for c in ids for r in by_case[c]] for ids in shard(order, per_task)]
    summary = EvaluationSummary(generations=len(rows))
    job = partial(EvaluateJob, store_url, {"extractor": extractor, "extractor_options": dict(extractor_options),
                                           "combine_rule": combine_rule, "batch_size": batch_size}, jc)
    bar = tqdm(total=len(rows), unit="row", desc=f"evaluating on {options.workers} Ray workers",
               disable=not progress, dynamic_ncols=True)

    def done(part: Any, out: dict[str, Any]) -> None:
        summary.merge(out["summary"])
        if judge is not None:
            judge.absorb(out["summary"].judge_stats, out["judge_error"], out["response_format"])
        bar.update(out["rows"])

    try:
        with RayPool(job, options) as pool:
            if on_workers is not None:
                on_workers(list(pool.pids.values()))
            pool.map(parts, done)
            restarts = pool.restarts
    finally:
        bar.close()
    with StudyStore(store_url) as store:
        combiner = Evaluator(store, extractor=None, combine_rule=combine_rule, progress=False)
        combiner.summary = summary
        combiner.combine(rows)
    return summary, restarts


class MiningJob:
    """A Ray worker's mining job: the study's model (on the worker's GPU, if any) and a FeatureMiner."""

    def __init__(self, protocol_path: str, runs_dir: str, feature_ids: list[str] | None, settings: Any,
                 batch_size: int, store_url: str) -> None:
        from steering.mining import FeatureMiner

        self.engine = build_worker_engine(protocol_path, runs_dir, None)
        self.miner = FeatureMiner(self.engine.adapter, self.engine.bank, self.engine.spec.layer,
                                  feature_ids=feature_ids, settings=settings, batch_size=batch_size)
        self.store_url = store_url

    def info(self) -> Any:
        from steering.distributed import engine_info

        return engine_info(self.engine)

    def describe(self, corpus_sha256: str) -> dict[str, Any]:
        m = self.miner
        return {"key": m.mining_key(corpus_sha256), "n_features": len(m.feature_ids), "reader": m.reader.kind}

    def run_shard(self, part: tuple[list[Any], set[str]]) -> dict[str, Any]:
        docs, skip = part
        state, report = self.miner.mine_docs(docs, skip)
        return {"state": state.to_bytes(), "n_docs": state.n_docs, "report": report,
                "doc_ids": [d.doc_id for d in docs if d.doc_id not in skip]}

    def finalize(self, key: str, blob: bytes, n_docs: int, names: Mapping[int, str]) -> int:
        with StudyStore(self.store_url) as store:
            return self.miner.finalize_state(store, key, blob, n_docs, names)


def mine_on_ray(study: Study, options: ExecutionOptions, corpus: Any, *, settings: Any, study_features: bool,
                batch_size: int, progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """`radsteer mine` on Ray workers. Returns (MiningReport, what mining.json records of the workers'
    miner). Resumable like the local run, and from the same checkpoints: merged states are saved
    with the documents they cover as each shard comes back."""
    import time
    from itertools import islice

    from tqdm.auto import tqdm

    from steering.mining import (
        CHUNK_BATCHES,
        MiningReport,
        MiningState,
        count_docs,
        doc_names,
        needed_ordinals,
        read_corpus,
    )
    from steering.store.manifest import sha256_file
    from steering.store.repositories import MiningCheckpoint

    start = time.perf_counter()
    url = resolve_url(study.run_dir)
    check_store_for_ray(url, options)
    bank = study.load_bank()
    feature_ids = study.feature_ids(bank) if study_features else None
    with study.open_store():
        pass  # creates (or upgrades) the study's tables before any worker writes
    job = partial(MiningJob, str(study.loaded.path.resolve()), str(study.run_dir.parent.resolve()), feature_ids,
                  settings, batch_size, url)
    with RayPool(job, options) as pool, StudyStore(url) as store:
        infos = pool.call_all("info")
        described = pool.call_all("describe", sha256_file(corpus))
        if len({d["key"] for d in described}) != 1:
            raise RadsteerError("the Ray workers built different miners (model, bank or settings differ between "
                                "nodes); give every node the same files and package versions")
        desc, key = described[0], described[0]["key"]
        merged = MiningState(desc["n_features"], settings)
        study.record(store, infos[0], bank)
        checkpoint = store.mining_checkpoint(key)
        if checkpoint is not None:
            merged.load_bytes(checkpoint.state, checkpoint.n_docs)
        docs = read_corpus(corpus)
        parts = []
        while chunk := list(islice(docs, batch_size * CHUNK_BATCHES)):  # the local run's planning chunks
            done = store.mined_documents(key, [d.doc_id for d in chunk])
            if len(done) < len(chunk):
                parts.append((chunk, done))
        report = MiningReport(docs_total=count_docs(corpus), docs_already_mined=merged.n_docs,
                              features=desc["n_features"])
        bar = tqdm(total=report.docs_total, initial=merged.n_docs, unit="doc", disable=not progress,
                   desc=f"mining on {options.workers} Ray workers", dynamic_ncols=True)

        def done_part(part: Any, out: dict[str, Any]) -> None:
            shard_state = MiningState(desc["n_features"], settings)
            shard_state.load_bytes(out["state"], out["n_docs"])
            merged.merge(shard_state)
            # the merged state and the documents it covers, in one go
            store.save_mining_checkpoint(MiningCheckpoint(key, merged.n_docs, merged.to_bytes()), out["doc_ids"])
            r = out["report"]
            report.docs_mined += r.docs_mined
            report.tokens_mined += r.tokens_mined
            report.docs_truncated += r.docs_truncated
            report.batches += r.batches
            report.checkpoints += 1
            bar.update(r.docs_mined)

        try:
            pool.map(parts, done_part)
        finally:
            bar.close()
        names = doc_names(corpus, needed_ordinals(merged))
        report.contexts_stored = pool.call_one("finalize", key, merged.to_bytes(), merged.n_docs, names)
    report.seconds = time.perf_counter() - start
    return report, {"key": key, "reader": desc["reader"], "n_features": desc["n_features"],
                    "layer_module": infos[0].layer_module}
