"""Where an SAE was trained, as a radsteer steering layer.

radsteer steers the *output of decoder layer L* (`layers[L]`, `hidden_states[L+1]`). SAE files
name their hook point in other conventions:

- TransformerLens / SAELens: `blocks.L.hook_resid_post` is the output of block L (→ L);
  `blocks.L.hook_resid_pre` is its input, i.e. the output of block L-1 (→ L-1; block 0's
  input is the embedding, which radsteer cannot steer);
- Hugging Face module paths (EleutherAI sparsify hookpoints, dictionary_learning submodules):
  `layers.L`, `model.layers.L`, `language_model.model.layers.L`, `transformer.h.L` are the
  decoder layer's output (→ L).

Anything else (MLP or attention outputs, `hook_resid_mid`) is not the residual stream at a layer
boundary: such an SAE has no known steering layer, and a command that needs one asks for it
(`--layer`, the protocol's `layer`) instead of guessing.
"""

from __future__ import annotations

import re

_TL = re.compile(r"^blocks\.(\d+)\.(hook_resid_post|hook_resid_pre)$")
_HF = re.compile(r"^(?:[A-Za-z_][\w]*\.)*(?:layers|h|blocks|layer)\.(\d+)$")


def layer_from_hook_name(hook_name: str) -> tuple[int | None, str]:
    """(steering layer, "") for a residual-stream hook; (None, why not) for any other hook."""
    name = hook_name.strip()
    m = _TL.match(name)
    if m:
        layer = int(m.group(1))
        if m.group(2) == "hook_resid_post":
            return layer, ""
        if layer == 0:
            return None, f"hook {name!r} is the embedding output (input of block 0), which radsteer cannot steer"
        return layer - 1, ""
    m = _HF.match(name)
    if m:
        return int(m.group(1)), ""
    return None, (f"hook {name!r} is not a residual-stream layer output (TransformerLens "
                  f"`blocks.L.hook_resid_post` / `hook_resid_pre`, Hugging Face `layers.L`)")


def tl_hook_name(layer: int) -> str:
    """The TransformerLens/SAELens hook name of radsteer's steering point at `layer`."""
    return f"blocks.{int(layer)}.hook_resid_post"
