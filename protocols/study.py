"""A study: a protocol bound to its run directory, and the objects it needs to run.

This is the one place that turns protocol fields into a model adapter, a feature bank, cases,
planned rows and a steering engine, so `sweep`, `run`, `validate` and `demo` agree exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from protocols.cases import assign_splits, read_cases_jsonl
from protocols.loader import LoadedProtocol, load_protocol
from protocols.selection import selection_record
from protocols.targets import resolved_targets
from steering.errors import RadsteerError
from steering.store import StudyStore, build_manifest, read_manifest, write_manifest
from steering.store.files import check_replaceable_dir, replace_dir, write_atomic
from steering.store.manifest import MANIFEST_FILENAME, sha256_path

PROTOCOL_FILENAME = "protocol.yaml"
CONCEPT_VECTORS_KIND = "concept_vectors"


def _is_concept_vector_folder(folder: Path) -> bool:
    """A folder radsteer wrote before it marked its outputs: only cfg.json and the weights, the
    cfg.json carrying radsteer's block for concept vectors."""
    from steering.sae_loaders import SAELENS_CFG, SAELENS_WEIGHTS

    if {p.name for p in folder.iterdir()} - {SAELENS_CFG, SAELENS_WEIGHTS}:
        return False
    try:
        cfg = json.loads((folder / SAELENS_CFG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and isinstance(cfg.get("radsteer"), dict) and cfg["radsteer"].get("source") == "concept"


@dataclass
class Study:
    loaded: LoadedProtocol
    run_dir: Path
    limit: int | None = None  # a command-line cap on cases, on top of the protocol's

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
        cases_path = self.loaded.resolve(spec.path)
        parse = None
        if self.protocol.model.kind == "maira2":  # images resolved against the cases file, errors at file:line
            from steering.maira2.cases import parse_case

            def parse(row: dict[str, Any], where: str) -> dict[str, Any]:
                return parse_case(row, base_dir=cases_path.parent, where=where)
        try:
            rows = read_cases_jsonl(cases_path, parse)
        except RadsteerError as exc:
            raise RadsteerError(f"{self.loaded.where('cases', 'path')}: {exc}") from None
        n_read = len(rows)
        rows = assign_splits(rows, spec.split.tune_fraction, spec.split.seed)
        if spec.split.use != "all":
            rows = [r for r in rows if r["split"] == spec.split.use]
            if not rows:
                raise RadsteerError(
                    f"{self.loaded.where('cases', 'split', 'use')}: no cases selected: none of the {n_read} "
                    f"case(s) in {cases_path} falls in split {spec.split.use!r} "
                    f"(tune_fraction {spec.split.tune_fraction})"
                )
        for cap in (spec.limit, self.limit):
            if cap is not None:
                rows = rows[:cap]
        return {r["case_id"]: r for r in rows}

    def bank_path(self) -> Path:
        return self.loaded.resolve(self.protocol.features.path)

    # -- concept vectors --------------------------------------------------------------------
    def concepts(self) -> list:
        from steering.concept_vectors import Concept

        items = {f.id: f for f in self.protocol.features.items}
        out = []
        for c in self.protocol.features.concepts:
            item = items.get(c.id)
            out.append(Concept(
                id=c.id, positive=tuple(c.positive), negative=tuple(c.negative),
                description=c.description or (item.description if item else ""),
                targets=tuple(c.targets or (item.targets if item else ())),
            ))
        return out

    def concept_fingerprint(self) -> str:
        from steering.concept_vectors import concepts_fingerprint

        return concepts_fingerprint(self.concepts(), layer=self.protocol.layer,
                                    scale=self.protocol.features.concept_scale)

    def concept_vectors_state(self) -> str:
        """"missing", "stale" (built from other sentences/layer/scale) or "current"."""
        from steering.sae_loaders import SAELENS_CFG

        cfg = self.bank_path() / SAELENS_CFG
        if not cfg.exists():
            return "missing"
        if not self.protocol.features.concepts:
            return "current"  # vectors supplied as they are: nothing to compare them with
        try:
            prov = json.loads(cfg.read_text()).get("radsteer", {}).get("provenance", {})
        except (OSError, ValueError):
            return "stale"
        return "current" if prov.get("fingerprint") == self.concept_fingerprint() else "stale"

    def build_concept_vectors(self, adapter, *, batch_size: int = 16):
        """Build the protocol's concept vectors with `adapter` and write them to features.path
        (atomically: a half-written folder never replaces a good one)."""
        from steering.concept_vectors import build_concept_vectors
        from steering.sae_loaders import save_saelens

        fs = self.protocol.features
        if fs.source != "concept":
            raise RadsteerError(f"{self.loaded.where('features', 'source')}: vectors are built only for "
                                f"source: concept (this protocol steers SAE features)")
        if not fs.concepts:
            raise RadsteerError(f"{self.loaded.where('features')}: no features.concepts to build vectors from "
                                f"(list each concept's positive and negative example sentences)")
        self.check_vectors_target()
        bank = build_concept_vectors(adapter, self.concepts(), self.protocol.layer,
                                     scale=fs.concept_scale, batch_size=batch_size)
        replace_dir(self.bank_path(), CONCEPT_VECTORS_KIND,
                    lambda tmp: save_saelens(bank, tmp, hook_name=adapter.layer_module_path(self.protocol.layer)),
                    what="concept vectors", where=self.loaded.where("features", "path"),
                    recognise=_is_concept_vector_folder)
        return bank

    def check_vectors_target(self) -> None:
        """features.path must be missing, empty or radsteer's own concept vectors: radsteer never
        deletes a folder it did not write (with `path: .` that would be the study itself)."""
        check_replaceable_dir(self.bank_path(), CONCEPT_VECTORS_KIND, what="concept vectors",
                              where=self.loaded.where("features", "path"), recognise=_is_concept_vector_folder)

    def ensure_concept_vectors(self, *, force: bool = False, batch_size: int = 16, adapter=None,
                               echo=print):
        """Build the concept vectors unless current ones exist (or `force`); returns (bank or None, adapter)."""
        fs = self.protocol.features
        if fs.source != "concept":
            raise RadsteerError(f"{self.loaded.where('features', 'source')}: `vectors build` needs source: concept")
        if not fs.concepts:
            raise RadsteerError(f"{self.loaded.where('features')}: no features.concepts to build vectors from")
        if self.concept_vectors_state() == "current" and not force:
            echo(f"radsteer vectors: {self.bank_path()} is up to date (use --force to rebuild)")
            return None, adapter
        self.check_vectors_target()  # before the model is loaded: refuse a folder radsteer did not write
        adapter = adapter or self.load_adapter()
        bank = self.build_concept_vectors(adapter, batch_size=batch_size)
        prov = bank.provenance
        echo(f"radsteer vectors: {bank.n_features} concept vectors ({', '.join(bank.ids)}) at layer "
             f"{self.protocol.layer} of {adapter.name}, scaled to the median token norm "
             f"{prov['median_token_norm']:.1f} ({prov['scale']}), written to {self.bank_path()}")
        return bank, adapter

    def check_concept_vectors(self) -> None:
        """Concept vectors must exist and match the protocol's sentences, layer and scale."""
        if self.protocol.features.source != "concept":
            return
        state = self.concept_vectors_state()
        if state == "current":
            return
        what = "not found" if state == "missing" else "were built from other sentences, layer or scale"
        force = " --force" if state == "stale" else ""
        raise RadsteerError(
            f"{self.loaded.where('features', 'path')}: concept vectors at {self.bank_path()} {what}: "
            f"build them with `radsteer vectors build {self.loaded.path}{force}`"
        )

    # -- feature bank -----------------------------------------------------------------------
    def load_bank(self):
        from steering.sae_loaders import load_feature_bank

        fs = self.protocol.features
        path = self.bank_path()
        self.check_concept_vectors()
        try:
            bank = load_feature_bank(path, fs.format, normalisation_factor=fs.normalisation_factor,
                                     layer=self.protocol.layer)
        except RadsteerError as exc:
            raise RadsteerError(f"{self.loaded.where('features', 'path')}: {exc}") from None
        bank.provenance["sha256"] = sha256_path(path)
        for item, fid in zip(fs.items, self.feature_ids(bank), strict=True):  # the protocol's wording wins
            if item.description:
                bank.descriptions[fid] = item.description
            if item.targets:
                bank.target_concepts[fid] = list(item.targets)
        return bank

    def feature_ids(self, bank) -> list[str]:
        out = []
        for i, item in enumerate(self.protocol.features.items):
            try:
                out.append(bank.canonical_id(item.id))
            except RadsteerError as exc:
                raise RadsteerError(f"{self.loaded.where('features', 'items', i, 'id')}: {exc}") from None
        return out

    def check_layer(self, num_layers: int, model_name: str) -> None:
        if not 0 <= self.protocol.layer < num_layers:
            raise RadsteerError(
                f"{self.loaded.where('layer')}: layer {self.protocol.layer} does not exist in {model_name}: "
                f"it has {num_layers} decoder layers (0–{num_layers - 1})"
            )

    def check_width(self, bank, hidden_size: int, num_layers: int, model_name: str) -> None:
        """The bank must be as wide as the model and the layer must exist (errors name the place)."""
        if bank.d_model != hidden_size:
            raise RadsteerError(
                f"{self.loaded.where('features', 'path')}: SAE width {bank.d_model} ≠ model width {hidden_size}: "
                f"{self.bank_path()} has d_in={bank.d_model} but {model_name} has hidden size {hidden_size}; "
                f"use vectors made for this model"
            )
        self.check_layer(num_layers, model_name)
        built_for = bank.provenance.get("model") if bank.source == "concept" else None
        if built_for and built_for != model_name and self.protocol.model.kind in ("demo", "hf_causal_lm"):
            raise RadsteerError(
                f"{self.loaded.where('features', 'path')}: concept vectors were built with {built_for}, "
                f"not {model_name}: rebuild them with `radsteer vectors build {self.loaded.path} --force`"
            )

    def check_device(self, device: str | None = None) -> str:
        """model.device (or the `device` a Ray worker was given) must exist on this machine
        (checked before any weights are read)."""
        from steering.adapters import resolve_device

        try:
            return resolve_device(device or self.protocol.model.device)
        except RadsteerError as exc:
            raise RadsteerError(f"{self.loaded.where('model', 'device')}: {exc}") from None

    def load_adapter(self, device: str | None = None):
        """The study's model, on `device` when given (a Ray worker's own GPU), else model.device."""
        from steering.models import load_adapter

        self.check_device(device)
        m = self.protocol.model
        return load_adapter(m.kind, self.loaded.resolve(m.path) if m.path else None, dtype=m.dtype,
                            device=device or m.device, prompt=m.prompt, image_features=m.image_features,
                            grounded=m.grounded)

    def engine(self, adapter, bank):
        from steering.engine import GenerationSettings, SteeringEngine, SteeringSpec

        p = self.protocol
        self.check_width(bank, adapter.hidden_size, adapter.num_layers, adapter.name)
        self.check_pushes(bank, adapter.dtype)
        spec = SteeringSpec(layer=p.layer, space=p.steering.vector_space, unit_norm=p.steering.unit_norm,
                            positions=p.steering.positions, exclude=tuple(p.steering.exclude))
        g = p.generation
        settings = GenerationSettings(max_new_tokens=g.max_new_tokens, do_sample=g.do_sample,
                                      temperature=g.temperature, top_p=g.top_p, seed=g.seed, stop=tuple(g.stop),
                                      no_repeat_ngram_size=g.no_repeat_ngram_size)
        return SteeringEngine(adapter, bank, spec=spec, settings=settings, batch_size=g.batch_size)

    def plan(self, feature_ids: list[str] | None = None) -> dict[str, int]:
        """What the sweep plans — cases × (1 baseline + features × non-zero α) — as recorded in the
        manifest (`plan`) for the report's "rows planned"; `feature_ids` default to the protocol's items."""
        ids = feature_ids if feature_ids is not None else [f.id for f in self.protocol.features.items]
        n_alpha = sum(1 for a in self.protocol.alphas if float(a) != 0.0)
        n_cases = len(self.cases)
        return {"rows": n_cases * (1 + len(ids) * n_alpha), "cases": n_cases, "features": len(ids), "alphas": n_alpha}

    def check_pushes(self, bank, dtype) -> None:
        """Every α·v of the protocol must be a finite number in the model's dtype."""
        from steering.engine import push_problem

        p = self.protocol
        why = push_problem(bank, self.feature_ids(bank), p.alphas, dtype, space=p.steering.vector_space,
                           unit_norm=p.steering.unit_norm)
        if why:
            alpha, message = why
            raise RadsteerError(f"{self.loaded.where('alphas', p.alphas.index(alpha))}: {message}")

    def planned_rows(self, bank):
        from steering.plan import plan_rows  # no torch: a Ray driver plans while its workers load

        ids = self.feature_ids(bank)
        if not ids:
            raise RadsteerError(f"{self.loaded.where('features', 'items')}: no features to steer: list them in "
                                f"features.items or choose them from interpretations with features.select")
        return plan_rows(list(self.cases), ids, self.protocol.alphas)

    # -- the run directory ------------------------------------------------------------------
    def check_run_dir(self) -> None:
        """Refuse to mix two different protocols in one run directory (nothing is written).

        `record` writes manifest.json (with the protocol's hash) before it freezes protocol.yaml,
        so every state a killed sweep can leave is checked: a manifest → its hash must match; a
        frozen protocol without a manifest (left by older versions, or made by hand) → it must be
        this protocol, byte for byte; neither → nothing recorded yet."""
        frozen = self.run_dir / PROTOCOL_FILENAME
        manifest_path = self.run_dir / MANIFEST_FILENAME
        other = "; give this protocol another `name` or move that directory away"
        if manifest_path.exists():
            try:
                recorded = read_manifest(self.run_dir).get("protocol_hash")
            except (OSError, ValueError):
                recorded = None
            if recorded is None:
                raise RadsteerError(f"{manifest_path} is not a radsteer manifest (no protocol_hash), so "
                                    f"{self.run_dir} cannot be checked against this protocol{other}")
            if recorded != self.loaded.canonical_hash():
                raise RadsteerError(f"{self.run_dir} already holds a study run with a different protocol "
                                    f"(manifest.json records another protocol hash){other}")
        elif frozen.exists() and frozen.read_bytes() != self.loaded.path.read_bytes():
            raise RadsteerError(f"{self.run_dir} holds a different protocol ({frozen}) and no manifest.json "
                                f"(an interrupted first sweep){other}")

    def open_store(self) -> StudyStore:
        return StudyStore.open(self.run_dir)

    def record(self, store: StudyStore, engine, bank) -> None:
        """Freeze the protocol, write the manifest, register cases and features."""
        self.check_run_dir()
        from steering.distributed import EngineInfo, engine_info

        self.run_dir.mkdir(parents=True, exist_ok=True)
        info = engine if isinstance(engine, EngineInfo) else engine_info(engine)  # Ray: the workers' engine
        model_path = info.path
        write_manifest(self.run_dir, build_manifest(
            study=self.protocol.name,
            protocol_hash=self.loaded.canonical_hash(),
            protocol_path=str(self.loaded.path),
            model={"kind": self.protocol.model.kind, "name": info.name, "path": model_path,
                   # MAIRA-2: the vision output fed to the projector (feature_maps | hidden_states)
                   "image_features": self.protocol.model.image_features if self.protocol.model.kind == "maira2"
                   else None,
                   # MAIRA-2 grounded reporting (boxes stored in generations.grounding); also in the model name
                   "grounded": self.protocol.model.grounded if self.protocol.model.kind == "maira2" else None,
                   "sha256": sha256_path(model_path) if model_path and Path(model_path).exists() else None,
                   "dtype": info.dtype, "dtype_requested": self.protocol.model.dtype,
                   "device": info.device, "prompt": info.prompt},
            cpu=info.cpu,
            feature_bank={"path": str(self.bank_path()), "source": bank.source, "sha256": bank.provenance.get("sha256"),
                          "format": bank.provenance.get("format"), "n_features": bank.n_features},
            layer=self.protocol.layer,
            layer_module=info.layer_module,
            vector_space=self.protocol.steering.vector_space,
            normalisation_factor=bank.normalisation_factor,
            settings_hash=info.settings_hash,
            engine=info.describe,
            seeds={"protocol": self.protocol.seed, "generation": self.protocol.generation.seed,
                   "split": self.protocol.cases.split.seed},
            feature_selection=selection_record(self.loaded),
            plan=self.plan(self.feature_ids(bank)),
            target_concepts=resolved_targets(self.protocol),  # feature id -> concept ids (resolved at load)
        ))
        # Frozen only after the manifest holds the protocol's hash (both atomically), so a kill at
        # any point leaves a state that check_run_dir checks (no window for a different protocol).
        frozen = self.run_dir / PROTOCOL_FILENAME
        if not frozen.exists():
            write_atomic(frozen, self.loaded.path.read_bytes())
        store.add_cases([{"case_id": cid, "inputs": c, "split": c["split"]} for cid, c in self.cases.items()])
        f1 = {fid: item.interpretability for item, fid in zip(self.protocol.features.items, self.feature_ids(bank),
                                                               strict=True) if item.interpretability is not None}
        store.add_features([
            {"feature_id": fid, "source": bank.source, "bank_index": bank.index(fid),
             "description": bank.descriptions.get(fid, ""), "target_concepts": bank.target_concepts.get(fid, []),
             **({"interpretability": f1[fid]} if fid in f1 else {})}
            for fid in self.feature_ids(bank)
        ])
