"""The shared verdict vocabulary, in one place so every method derives labels the same way."""

from __future__ import annotations

from typing import Literal

Label = Literal["on", "off", "both", "none"]
LABELS: tuple[str, ...] = ("on", "off", "both", "none")
METHODS: tuple[str, ...] = ("entity_diff", "llm_judge", "combined")


def label_of(on_target: bool, off_target: bool) -> Label:
    """"on" (on-target only), "off" (off-target only), "both" or "none"."""
    if on_target and off_target:
        return "both"
    if on_target:
        return "on"
    if off_target:
        return "off"
    return "none"


def direction_of(alpha: float) -> int:
    """The steering direction is the sign of α; α = 0 (a control row) counts as +1."""
    return -1 if alpha < 0 else 1
