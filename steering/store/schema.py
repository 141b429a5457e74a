"""Tables of the study store.

Every table has a natural UNIQUE key so that a crashed or repeated step can simply write its
rows again: inserts of existing keys are ignored (`insert_ignore`) or update the row
(`upsert`), never duplicate it. Identifiers of cases and features are the study's own strings
(`case_id`, `feature_id`), so exported tables read without joins.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

metadata = MetaData()

BASELINE_FEATURE = ""
"""`generations.feature_id` of the unsteered baseline row (α = 0).

An empty string rather than NULL: SQL treats NULLs as distinct in UNIQUE constraints, which
would let a resumed sweep store the same baseline twice."""

cases = Table(
    "cases",
    metadata,
    Column("case_id", String(200), primary_key=True),
    Column("inputs", JSON, nullable=False),  # indication, technique, comparison, prior report, images, text
    Column("split", String(16), nullable=False, default="test"),
)

features = Table(
    "features",
    metadata,
    Column("feature_id", String(200), primary_key=True),
    Column("source", String(16), nullable=False),  # "sae" | "concept"
    Column("bank_index", Integer, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("target_concepts", JSON, nullable=False, default=list),
    Column("interpretability", Float, nullable=True),
    Column("explainer", String(32), nullable=True),  # who wrote the description: "llm" | "lexicon" | NULL (the protocol)
)

generations = Table(
    "generations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", String(200), ForeignKey("cases.case_id"), nullable=False),
    Column("feature_id", String(200), nullable=False, default=BASELINE_FEATURE),
    Column("alpha", Float, nullable=False),
    Column("settings_hash", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("n_tokens", Integer, nullable=False),
    Column("finish_reason", String(16), nullable=False),  # "eos" | "stop" | "length" | "error"
    Column("seconds", Float, nullable=False),
    # why a row failed (finish_reason "error", e.g. non-finite logits); NULL for a report
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), server_default=func.now()),
    # grounded reports (MAIRA-2 `model.grounded`): [{"text", "boxes": [[x0, y0, x1, y1], …]}] in report
    # order, boxes normalised to the frontal image; NULL when the model was not asked to ground (`text` is
    # always the plain report the evaluators read)
    Column("grounding", JSON, nullable=True),
    UniqueConstraint("case_id", "feature_id", "alpha", "settings_hash", name="uq_generation"),
)

extractions = Table(
    "extractions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("generation_id", Integer, ForeignKey("generations.id"), nullable=False),
    Column("backend", String(32), nullable=False),  # "radgraph" | "radgraph-xl" | "lexicon"
    Column("entities", JSON, nullable=False),
    UniqueConstraint("generation_id", "backend", name="uq_extraction"),
)

verdicts = Table(
    "verdicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("generation_id", Integer, ForeignKey("generations.id"), nullable=False),
    Column("method", String(32), nullable=False),  # "entity_diff" | "llm_judge" | "combined"
    Column("on_target", Boolean, nullable=True),  # NULL only together with `error`
    Column("off_target", Boolean, nullable=True),
    Column("label", String(16), nullable=True),  # "on" | "off" | "both" | "none"; NULL on error
    Column("evidence", JSON, nullable=False, default=dict),
    Column("judge_model", String(200), nullable=True),
    Column("prompt_hash", String(64), nullable=True),
    Column("disagreement", Boolean, nullable=True),  # combined verdicts: the methods disagree
    Column("error", Text, nullable=True),
    UniqueConstraint("generation_id", "method", name="uq_verdict"),
)

judge_cache = Table(
    "judge_cache",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("prompt_hash", String(64), primary_key=True),
    Column("response", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now()),
)

annotations = Table(
    "annotations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task", String(16), nullable=False),  # "change" | "feature"
    Column("item_key", String(200), nullable=False),  # generation id or feature id, as text
    Column("generation_id", Integer, ForeignKey("generations.id"), nullable=True),
    Column("feature_id", String(200), nullable=True),
    Column("annotator", String(100), nullable=False),
    Column("answers", JSON, nullable=False),
    Column("seconds", Float, nullable=True),
    Column("shown_order", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), onupdate=func.now()),
    UniqueConstraint("task", "item_key", "annotator", name="uq_annotation"),
    # a reader's own answers: the reader's loop joins their queue to them on every request, and
    # uq_annotation (item first) left PostgreSQL scanning all of a task's answers per queued item
    Index("ix_annotation_reader", "annotator", "task", "item_key"),
)

queue_items = Table(
    "queue_items",
    metadata,
    Column("annotator", String(100), primary_key=True),
    Column("task", String(16), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("item_key", String(200), nullable=False),
    Column("double_read", Boolean, nullable=False, default=False),
    Column("seed", Integer, nullable=False),
    UniqueConstraint("annotator", "task", "item_key", name="uq_queue_item"),
)

feature_contexts = Table(
    "feature_contexts",
    metadata,
    Column("feature_id", String(200), primary_key=True),
    Column("kind", String(16), primary_key=True),  # "top" | "quantile" | "zero"
    Column("rank", Integer, primary_key=True),
    Column("activation", Float, nullable=False),
    Column("doc_id", String(200), nullable=False),
    Column("token_index", Integer, nullable=False),
    Column("tokens", JSON, nullable=False),  # the context window, as strings
    Column("activations", JSON, nullable=False),  # per token of the window
    Column("center", Integer, nullable=True),  # index in `tokens` of the token at `token_index`
)

feature_stats = Table(
    "feature_stats",
    metadata,
    Column("feature_id", String(200), primary_key=True),
    Column("corpus_hash", String(64), nullable=False),
    Column("n_tokens", Integer, nullable=False),
    Column("frequency", Float, nullable=False),  # fraction of tokens where the feature is active
    Column("max_activation", Float, nullable=False),
    Column("quantiles", JSON, nullable=False),
)

mining_progress = Table(
    "mining_progress",
    metadata,
    Column("corpus_hash", String(64), primary_key=True),
    Column("doc_id", String(200), primary_key=True),
)

mining_state = Table(
    "mining_state",
    metadata,
    Column("corpus_hash", String(64), primary_key=True),  # same key as mining_progress
    Column("n_docs", Integer, nullable=False),
    Column("state", LargeBinary, nullable=False),  # safetensors bytes of the running top-k/histograms
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), onupdate=func.now()),
)

activation_checks = Table(
    "activation_checks",
    metadata,
    Column("generation_id", Integer, ForeignKey("generations.id"), primary_key=True),
    Column("feature_id", String(200), nullable=False),
    Column("steered_activation", Float, nullable=False),  # mean over the steered text's tokens
    Column("baseline_activation", Float, nullable=False),  # same, over the baseline text
    Column("steered_max", Float, nullable=False),
    Column("baseline_max", Float, nullable=False),
)

feature_interpretations = Table(
    "feature_interpretations",
    metadata,
    Column("feature_id", String(200), primary_key=True),
    Column("explainer", String(32), primary_key=True),  # "llm" | "lexicon"
    Column("scorer", String(32), nullable=False),
    Column("settings_hash", String(64), nullable=False),  # explainer/scorer settings, split seed, prompt versions
    Column("description", Text, nullable=False),
    Column("targets", JSON, nullable=False),  # concept ids
    Column("precision", Float, nullable=True),  # NULL when undefined (nothing predicted active) or on error
    Column("recall", Float, nullable=True),
    Column("f1", Float, nullable=True),
    Column("balanced_accuracy", Float, nullable=True),
    Column("recall_by_quantile", JSON, nullable=False),  # {"q1": recall, ...} over the held-out active examples
    Column("n_active", Integer, nullable=False),
    Column("n_inactive", Integer, nullable=False),
    Column("examples", JSON, nullable=False),  # held-out examples: text, kind, quantile, label, prediction
    Column("details", JSON, nullable=False),  # seeds, prompt hashes, models, enrichment table, counts
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), server_default=func.now()),
)

interpretation_exchanges = Table(
    "interpretation_exchanges",
    metadata,
    Column("feature_id", String(200), primary_key=True),
    Column("explainer", String(32), primary_key=True),
    Column("stage", String(16), primary_key=True),  # "explain" | "score"
    Column("batch", Integer, primary_key=True),
    Column("model", String(200), nullable=True),
    Column("prompt_hash", String(64), nullable=True),
    Column("request", JSON, nullable=False),  # the messages sent (never the key)
    Column("response", JSON, nullable=True),  # the validated answer
    Column("error", Text, nullable=True),
    Column("from_cache", Boolean, nullable=False, default=False),
)

# ---- the reader study (annotation app): sessions and adjudication --------------------------

sessions = Table(
    "sessions",
    metadata,
    # sha256 of the cookie's token: a copy of the database does not hand out logins
    Column("token_hash", String(64), primary_key=True),
    Column("annotator", String(100), nullable=False),
    # the account's credential version when the session began; a changed password or role, or a
    # removed account, no longer matches and the session is refused (checked on every request)
    Column("credential", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

adjudications = Table(
    "adjudications",
    metadata,
    Column("task", String(16), primary_key=True),  # "change" | "feature"
    Column("item_key", String(200), primary_key=True),  # as in annotations.item_key
    Column("adjudicator", String(100), nullable=False),
    Column("answers", JSON, nullable=False),  # the final answer: same fields as annotations.answers
    Column("reason", String(32), nullable=False),  # "disagreement" | "flagged" | "disagreement+flagged"
    Column("readers", JSON, nullable=False),  # {annotator: answers} of the reads that were adjudicated
    Column("seconds", Float, nullable=True),  # adjudicator's time on task (summed over revisions)
    Column("created_at", DateTime(timezone=True), server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), onupdate=func.now()),
)

TABLES = {t.name: t for t in metadata.sorted_tables}
