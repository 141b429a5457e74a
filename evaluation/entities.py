"""The common entity schema that every extraction backend produces.

RadGraph's own schema (observation / anatomy entities with "definitely present / absent /
uncertain") is the model: the `lexicon` backend writes the same fields, so the entity diff
and target matching never care which backend ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

Assertion = Literal["present", "absent", "uncertain"]
EntityKind = Literal["observation", "anatomy"]


@dataclass(frozen=True)
class Entity:
    """One observation or anatomy mention in a report."""

    text: str  # the surface form as written
    kind: EntityKind
    assertion: Assertion = "present"
    concept: str | None = None  # lexicon concept id (e.g. "pleural_effusion") when it normalises
    modifiers: dict[str, str] = field(default_factory=dict)  # e.g. {"laterality": "left", "severity": "moderate"}
    anatomy: str | None = None  # anatomy the observation is located at, if known
    start: int = -1  # character offsets in the report (-1 if the backend has none)
    end: int = -1

    def key(self) -> str:
        """What the diff matches on: the concept when normalised, else the lower-cased text."""
        return self.concept or self.text.lower().strip()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entity:
        return cls(**data)


class EntityExtractor(Protocol):
    """A backend: many reports in, one entity list per report out (batched for speed).
    Backends are registered by name in evaluation.extractors (built-ins and plugins)."""

    name: str

    def extract(self, texts: Sequence[str]) -> list[list[Entity]]: ...
