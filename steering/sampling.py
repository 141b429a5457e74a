"""Per-row seeded sampling, so a steered row and its baseline share their randomness.

`generate` draws from one global generator, so in a batch each row's draws depend on the rows
beside it. This logits processor samples each row from its own `torch.Generator` and then
masks every other token, so the (greedy) search picks exactly the sampled token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class SeededSampler:
    """A `LogitsProcessor`: temperature + top-p sampling with one generator per row."""

    def __init__(self, seeds: Sequence[int], *, temperature: float = 1.0, top_p: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError("temperature must be > 0 for sampling")
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = float(temperature)
        self.top_p = float(top_p)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1).cpu()
        if self.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            keep = sorted_p.cumsum(-1) - sorted_p < self.top_p  # always keeps the top token
            sorted_p = sorted_p * keep
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        chosen = torch.stack(
            [torch.multinomial(probs[b], 1, generator=g)[0] for b, g in enumerate(self.generators)]
        ).to(scores.device)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, chosen[:, None], 0.0)
        return out
