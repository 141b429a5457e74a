"""The study protocol: one YAML file that says everything a study does.

Validated by pydantic; `protocols.loader.load_protocol` turns every validation error into one
line naming the file, the line and the field. Unknown fields are errors (a typo must not be
silently ignored), and secrets never sit in a protocol: the judge names the *environment
variable* that holds its API key.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from protocols.config import default as _default  # settings a command flag can also set: one default


def _no_bool(v: object) -> object:
    # YAML reads yes/no/on/off as booleans; pydantic would quietly turn them into 1.0/0.0.
    if isinstance(v, bool):
        raise ValueError(f"expected a number, not the boolean {str(v).lower()}")
    return v


Number = Annotated[float, BeforeValidator(_no_bool), Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    kind: Literal["maira2", "hf_causal_lm", "demo"]
    path: str | None = None  # a local directory (not needed for `demo`)
    dtype: str = "auto"  # auto → bf16 on a GPU and on CPUs with bf16 matrix support, else fp32
    device: str = "auto"
    # How a text-only model is asked: "auto" (its chat template if it has one), "chat", "completion"
    # (the plain sections) or "few_shot" (example cases ending in `FINDINGS:`, for small base/chat
    # models that otherwise answer *about* reports; pair it with `generation.stop`).
    prompt: Literal["auto", "chat", "completion", "few_shot"] = "auto"
    # MAIRA-2 only: which vision output feeds the projector — the backbone's layer-normed
    # "feature_maps" (the earlier official code) or its raw "hidden_states" (the later one, for
    # transformers 4.51); see steering/maira2/modeling.py. Recorded in manifest.json.
    image_features: Literal["feature_maps", "hidden_states"] = "feature_maps"
    # MAIRA-2 only: grounded reporting — each finding with its boxes on the frontal image, stored per
    # generation (`generations.grounding`) and drawn in the annotation app; evaluators read the plain text.
    grounded: bool = False

    @model_validator(mode="after")
    def _path_needed(self) -> ModelSpec:
        if self.kind != "demo" and not self.path:
            raise ValueError(f"model.path is required for model kind {self.kind!r}")
        if self.image_features != "feature_maps" and self.kind != "maira2":
            raise ValueError(f"model.image_features applies to MAIRA-2 only, not model kind {self.kind!r}")
        if self.grounded and self.kind != "maira2":
            raise ValueError(f"model.grounded applies to MAIRA-2 only, not model kind {self.kind!r}")
        return self


class FeatureSpec(_Strict):
    id: str  # SAE feature as "f1599" / "1599", or a concept-vector id
    description: str = ""
    targets: list[str] = Field(default_factory=list)  # lexicon concept ids or synonyms
    interpretability: float | None = Field(default=None, ge=0, le=1)  # detection F1 of the description, if known

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, v: object) -> object:
        return str(v) if isinstance(v, int) else v


class ConceptExample(_Strict):
    """Example sentences with and without a concept, for difference-of-means vectors."""

    id: str
    description: str = ""
    targets: list[str] = Field(default_factory=list)
    positive: list[str] = Field(min_length=1)
    negative: list[str] = Field(min_length=1)


class FeatureSelect(_Strict):
    """Steer the interpretable features, as the paper did: take items, descriptions and targets
    from a `radsteer interpret` run's interpretations.csv (merged into `items` at load time, so
    the protocol hash covers them; the selection is also recorded in the manifest)."""

    interpretations: str  # path to interpretations.csv (relative to the protocol file)
    min_f1: float = Field(default=0.75, ge=0, le=1)
    max_features: int | None = Field(default=50, ge=1)  # the best by F1 (ties: feature id)
    concepts: list[Literal["finding", "device", "longitudinal", "textual"]] | None = None  # target categories
    explainer: Literal["llm", "lexicon"] | None = None  # only this explainer's rows
    # at most one feature per target concept (its best by F1), so a few steered features cover
    # several findings rather than one finding several times
    one_per_target: bool = False


class FeatureSource(_Strict):
    source: Literal["sae", "concept"]
    path: str  # SAE file/folder, or the folder concept vectors are written to / read from
    format: Literal["auto", "dictionary_learning", "saelens", "sparsify"] = "auto"
    normalisation_factor: Number | None = None
    items: list[FeatureSpec] = Field(default_factory=list)  # steered features (a protocol that only mines/interprets may list none)
    # A YAML list or JSONL file of more items ({id, description, targets}), merged into `items` at
    # load time (so the protocol hash covers them) — e.g. features picked from an SAE's interpretations.
    items_file: str | None = None
    concepts: list[ConceptExample] = Field(default_factory=list)  # how concept vectors are built
    select: FeatureSelect | None = None  # items chosen from interpretations (see FeatureSelect)
    # Concept vectors: unit direction × median residual-token norm at the layer ("median_norm",
    # so α is in typical residual norms), or the plain difference of means ("raw").
    concept_scale: Literal["median_norm", "raw"] = "median_norm"

    @model_validator(mode="after")
    def _unique_ids(self) -> FeatureSource:
        seen: set[str] = set()
        for f in self.items:
            if f.id in seen:
                raise ValueError(f"feature id {f.id!r} is listed twice")
            seen.add(f.id)
        concept_ids = [c.id for c in self.concepts]
        if len(set(concept_ids)) != len(concept_ids):
            raise ValueError("features.concepts lists a concept id twice")
        if self.concepts and self.source != "concept":
            raise ValueError("features.concepts is only used with source: concept")
        return self


class SteeringOptions(_Strict):
    vector_space: Literal["residual", "sae_input"] = "residual"
    unit_norm: bool = False
    positions: Literal["all", "prompt", "generated"] = "all"
    exclude: list[Literal["special", "image"]] = Field(default_factory=list)


class GenerationOptions(_Strict):
    max_new_tokens: int = Field(default=64, ge=1, le=4096)  # MAIRA-2 left unset: 300, 450 grounded (Protocol)
    do_sample: bool = False
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int = 0
    # rows per generate call; "auto": calibrated on the sweep's first batches (steering/batching.py)
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    # Stop sequences: a row ends at the first one it writes (not included in its text), each row
    # on its own in a batch. E.g. ["\n\n"] ends a few-shot findings section at the blank line.
    stop: list[str] = Field(default_factory=list, max_length=16)
    # > 0: no row repeats an n-gram of its own generated text (greedy small models loop otherwise).
    no_repeat_ngram_size: int = Field(default=0, ge=0, le=64)

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, v: list[str]) -> list[str]:
        if any(not s for s in v):
            raise ValueError("a stop sequence must not be empty")
        return v


class SplitOptions(_Strict):
    tune_fraction: float = Field(default=0.0, ge=0, lt=1)
    seed: int = 0
    use: Literal["test", "tune", "all"] = "all"


class CaseSource(_Strict):
    path: str  # JSONL, one case per line
    limit: int | None = Field(default=None, ge=1)
    split: SplitOptions = Field(default_factory=SplitOptions)


class JudgeOptions(_Strict):
    base_url: str | None = None  # any OpenAI-compatible endpoint; None → OpenAI
    model: str
    api_key_env: str | None = _default("judge.api_key_env")  # the variable's NAME, never the key; null: keyless
    concurrency: int = Field(default=_default("judge.concurrency"), ge=1, le=256)
    timeout_s: float = Field(default=_default("judge.timeout_s"), gt=0)
    max_retries: int = Field(default=_default("judge.max_retries"), ge=0)
    max_calls: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    response_format: Literal["auto", "json_schema", "json_object", "text"] = _default("judge.response_format")

    @field_validator("base_url", "api_key_env", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v


class EvaluationOptions(_Strict):
    extractor: str = _default("evaluate.extractor")  # a name in evaluation.extractors (built-ins and `radsteer.extractors` plugins)
    radgraph_cache: str | None = None
    judge: JudgeOptions | None = None

    @field_validator("extractor")
    @classmethod
    def _known_extractor(cls, v: str) -> str:
        from evaluation.extractors import names

        known = names()
        if v not in known:
            raise ValueError(f"unknown entity extractor {v!r}; choose one of {', '.join(known)}")
        return v


class AnnotationOptions(_Strict):
    """`radsteer annotate`'s settings (flags override them; one default each, in protocols/config.py)."""

    annotators_file: str | None = None  # relative to the protocol file
    overlap: float = Field(default=_default("annotate.overlap"), ge=0, le=1)
    blinded: bool = _default("annotate.blinded")
    disagreements_first: bool = _default("annotate.disagreements_first")
    seed: int = _default("annotate.seed")


class ReportOptions(_Strict):
    title: str | None = None
    examples: int = Field(default=_default("report.examples"), ge=0)
    multiplicity: Literal["holm", "fdr_bh"] = _default("stats.correction")


class ExecutionOptions(_Strict):
    """How the sweep runs (steering.distributed); not part of the study's identity (hash)."""

    executor: Literal["local", "ray"] = _default("execution.executor")
    workers: int = Field(default=_default("execution.workers"), ge=1)
    gpus_per_worker: float = Field(default=0.0, ge=0)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    threads_per_worker: int = Field(default=1, ge=1)
    address: str | None = _default("execution.address")  # a Ray cluster to join; none: a local Ray
    cases_per_task: int | None = Field(default=None, ge=1)


class Protocol(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # also the run directory's name
    description: str = ""
    model: ModelSpec
    features: FeatureSource
    layer: int
    alphas: list[Number] = Field(min_length=1)
    steering: SteeringOptions = Field(default_factory=SteeringOptions)
    generation: GenerationOptions = Field(default_factory=GenerationOptions)
    cases: CaseSource
    evaluation: EvaluationOptions = Field(default_factory=EvaluationOptions)
    annotation: AnnotationOptions = Field(default_factory=AnnotationOptions)
    report: ReportOptions = Field(default_factory=ReportOptions)
    execution: ExecutionOptions = Field(default_factory=ExecutionOptions)
    seed: int = 0

    @model_validator(mode="after")
    def _the_models_report_length(self) -> Protocol:
        """A MAIRA-2 protocol that does not say how long a report may be gets MAIRA-2's official
        length (300 new tokens, 450 grounded), as `radsteer generate` does, not the 64 of a small
        text model, which cut MAIRA-2's reports short. Other models keep 64 (and their hash)."""
        if self.model.kind == "maira2" and "max_new_tokens" not in self.generation.model_fields_set:
            from steering.maira2.defaults import max_new_tokens

            self.generation.max_new_tokens = max_new_tokens(self.model.grounded)
        return self

    @field_validator("alphas")
    @classmethod
    def _alphas_distinct(cls, v: list[float]) -> list[float]:
        if len(set(v)) != len(v):
            raise ValueError("α values must be distinct")
        return v
