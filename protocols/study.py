"""A study: a protocol bound to its run directory, and the objects it needs to run.

This is the one place that turns protocol fields into a model adapter, a feature bank, cases,
planned rows and a steering engine, so `sweep`, `run`, `validate` and `demo` agree exactly.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from protocols.cases import assign_splits, read_cases_jsonl
from protocols.loader import LoadedProtocol, load_protocol
from steering.errors import RadsteerError
from steering.store import StudyStore, build_manifest, read_manifest, write_manifest
from steering.store.manifest import sha256_path

PROTOCOL_FILENAME = "protocol.yaml"


@dataclass
class Study:
    loaded: LoadedProtocol
    run_dir: Path
    limit: int | None = None  # a command-line cap on cases, on top of the protocol's
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_protocol(cls, path: str | Path, runs_dir: str | Path = "runs", limit: int | None = None) -> Study:
        loaded = load_protocol(path)
        return cls(loaded, Path(runs_dir) / loaded.protocol.name, limit=limit)

    @property
    def protocol(self):
        return self.loaded.protocol

    # -- inputs -----------------------------------------------------------------------------
    @cached_property
    def cases(self) -> dict[str, dict[str, Any]]:
        spec = self.protocol.cases
        rows = read_cases_jsonl(self.loaded.resolve(spec.path))
        rows = assign_splits(rows, spec.split.tune_fraction, spec.split.seed)
        if spec.split.use != "all":
            rows = [r for r in rows if r["split"] == spec.split.use]
        for cap in (spec.limit, self.limit):
            if cap is not None:
                rows = rows[:cap]
        if self.protocol.model.kind == "maira2":
            from steering.maira2.cases import resolve_case_images

            cases_path = self.loaded.resolve(spec.path)
            rows = [resolve_case_images(r, cases_path) for r in rows]
        return {r["case_id"]: r for r in rows}

    def bank_path(self) -> Path:
        return self.loaded.resolve(self.protocol.features.path)

    def load_bank(self):
        from steering.sae_loaders import load_feature_bank

        fs = self.protocol.features
        path = self.bank_path()
        if fs.source == "concept" and not path.exists():
            raise RadsteerError(
                f"concept vectors not found at {path}: build them with "
                f"`radsteer vectors build {self.loaded.path}`"
            )
        bank = load_feature_bank(path, fs.format, normalisation_factor=fs.normalisation_factor,
                                 layer=self.protocol.layer)
        bank.provenance["sha256"] = sha256_path(path)
        for item in fs.items:  # protocol descriptions/targets win over the bank's own
            fid = bank.canonical_id(item.id)
            if item.description:
                bank.descriptions[fid] = item.description
            if item.targets:
                bank.target_concepts[fid] = list(item.targets)
        return bank

    def feature_ids(self, bank) -> list[str]:
        return [bank.canonical_id(item.id) for item in self.protocol.features.items]

    def load_adapter(self):
        from steering.models import load_adapter

        m = self.protocol.model
        return load_adapter(m.kind, self.loaded.resolve(m.path) if m.path else None, dtype=m.dtype, device=m.device)

    def engine(self, adapter, bank):
        from steering.engine import GenerationSettings, SteeringEngine, SteeringSpec

        p = self.protocol
        spec = SteeringSpec(layer=p.layer, space=p.steering.vector_space, unit_norm=p.steering.unit_norm,
                            positions=p.steering.positions, exclude=tuple(p.steering.exclude))
        g = p.generation
        settings = GenerationSettings(max_new_tokens=g.max_new_tokens, do_sample=g.do_sample,
                                      temperature=g.temperature, top_p=g.top_p, seed=g.seed)
        return SteeringEngine(adapter, bank, spec=spec, settings=settings, batch_size=g.batch_size)

    def planned_rows(self, bank):
        from steering.engine import plan_rows

        return plan_rows(list(self.cases), self.feature_ids(bank), self.protocol.alphas)

    # -- the run directory ------------------------------------------------------------------
    def check_run_dir(self) -> None:
        """Refuse to mix two different protocols in one run directory (nothing is written)."""
        frozen = self.run_dir / PROTOCOL_FILENAME
        if not frozen.exists():
            return
        if read_manifest(self.run_dir).get("protocol_hash") not in (None, self.loaded.canonical_hash()):
            raise RadsteerError(
                f"{self.run_dir} already holds a study run with a different protocol "
                f"({frozen}); give this protocol another `name` or move that directory away"
            )

    def open_store(self) -> StudyStore:
        return StudyStore.open(self.run_dir)

    def record(self, store: StudyStore, engine, bank) -> None:
        """Freeze the protocol, write the manifest, register cases and features."""
        self.check_run_dir()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        frozen = self.run_dir / PROTOCOL_FILENAME
        if not frozen.exists():
            shutil.copyfile(self.loaded.path, frozen)
        adapter = engine.adapter
        model_path = adapter.path
        write_manifest(self.run_dir, build_manifest(
            study=self.protocol.name,
            protocol_hash=self.loaded.canonical_hash(),
            protocol_path=str(self.loaded.path),
            model={"kind": self.protocol.model.kind, "name": adapter.name, "path": model_path,
                   "sha256": sha256_path(model_path) if model_path and Path(model_path).exists() else None},
            feature_bank={"path": str(self.bank_path()), "source": bank.source, "sha256": bank.provenance.get("sha256"),
                          "format": bank.provenance.get("format"), "n_features": bank.n_features},
            layer=self.protocol.layer,
            layer_module=adapter.layer_module_path(self.protocol.layer),
            vector_space=self.protocol.steering.vector_space,
            normalisation_factor=bank.normalisation_factor,
            settings_hash=engine.settings_hash(),
            engine=engine.describe(),
            seeds={"protocol": self.protocol.seed, "generation": self.protocol.generation.seed,
                   "split": self.protocol.cases.split.seed},
        ))
        store.add_cases([{"case_id": cid, "inputs": c, "split": c["split"]} for cid, c in self.cases.items()])
        store.add_features([
            {"feature_id": fid, "source": bank.source, "bank_index": bank.index(fid),
             "description": bank.descriptions.get(fid, ""), "target_concepts": bank.target_concepts.get(fid, [])}
            for fid in self.feature_ids(bank)
        ])
