"""A protocol's target concepts, resolved once and early.

Every `targets:` entry (of `features.items` and `features.concepts`) is resolved to a concept id
of the vocabulary (evaluation.vocabulary) when the protocol is loaded, so `radsteer validate`,
`sweep` and `run` refuse an unknown name — with the nearest known names — before anything runs,
instead of every `evaluate` row of that feature failing later. The resolved ids are recorded in
the run's manifest.json (`target_concepts`).
"""

from __future__ import annotations

from typing import Any

from evaluation.vocabulary import UnknownConceptError, load_vocabulary


def target_errors(protocol: Any) -> list[tuple[tuple, str]]:
    """(location, message) for every target name the vocabulary does not know."""
    vocab = load_vocabulary()
    out: list[tuple[tuple, str]] = []
    for section in ("items", "concepts"):
        for i, entry in enumerate(getattr(protocol.features, section)):
            for j, name in enumerate(entry.targets):
                try:
                    vocab.resolve_one(name)
                except UnknownConceptError as exc:
                    out.append((("features", section, i, "targets", j), str(exc)))
    return out


def resolved_targets(protocol: Any) -> dict[str, list[str]]:
    """Feature id -> the concept ids of its targets (an item's own, else its concept example's)."""
    vocab = load_vocabulary()
    by_concept = {c.id: list(c.targets) for c in protocol.features.concepts}
    return {item.id: vocab.resolve(item.targets or by_concept.get(item.id, [])) for item in protocol.features.items}
