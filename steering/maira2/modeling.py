"""MAIRA-2 on transformers' own LLaVA classes (no remote code).

MAIRA-2 is LLaVA with three differences, all reproduced here:
- the vision tower is a `Dinov2Backbone` (RAD-DINO), not a CLIP vision model;
- image features are, by default, the backbone's *feature map* of the configured stage (its
  hidden state with the backbone's final LayerNorm applied), CLS dropped for strategy "default",
  as the earlier published `modeling_maira2.py` does; the later one (the version that runs on
  transformers 4.51) feeds the raw `hidden_states[vision_feature_layer]` (no final LayerNorm).
  `image_features` chooses: "feature_maps" (default) or "hidden_states" (IMAGE_FEATURE_SOURCES);
- the projector is `projector_n_layers` Linear layers with the activation between them, kept in
  an `nn.Sequential` called `layers`, so its parameters are `multi_modal_projector.layers.{0,2,4,6}`
  exactly as in the official checkpoint.

Everything else (merging features into the image-token positions, the Llama language model, the
LM head, `generate`) is transformers' `LlavaModel` / `LlavaForConditionalGeneration`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, Dinov2Backbone
from transformers.activations import ACT2FN
from transformers.models.llava.modeling_llava import (
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaPreTrainedModel,
)

from steering.maira2.config import Maira2Config

IMAGE_FEATURE_SOURCES = ("feature_maps", "hidden_states")


class Maira2Projector(nn.Module):
    """Linear(vision → text), then (n_layers − 1) × [activation, Linear(text → text)]."""

    def __init__(self, config: Maira2Config) -> None:
        super().__init__()
        d_vision = config.vision_config.hidden_size
        d_text = config.text_config.hidden_size
        bias = bool(config.multimodal_projector_bias)
        modules: list[nn.Module] = [nn.Linear(d_vision, d_text, bias=bias)]
        for _ in range(config.projector_n_layers - 1):
            modules.append(ACT2FN[config.projector_hidden_act])
            modules.append(nn.Linear(d_text, d_text, bias=bias))
        self.layers = nn.Sequential(*modules)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.layers(image_features)


class Maira2Model(LlavaModel):
    """`LlavaModel` with MAIRA-2's backbone tower, deep projector and feature-map selection."""

    config_class = Maira2Config

    def __init__(self, config: Maira2Config) -> None:
        LlavaPreTrainedModel.__init__(self, config)  # skip LlavaModel.__init__: it builds a CLIP-style tower
        self.vision_tower = Dinov2Backbone(config.vision_config)
        self.multi_modal_projector = Maira2Projector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.image_features = "feature_maps"  # which vision output feeds the projector (module docstring)
        self.post_init()

    def select_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Backbone output [n_images, tokens, d_vision] that the projector consumes: the
        layer-normed feature map, or the raw hidden state (`image_features`)."""
        cfg = self.config
        if self.image_features == "hidden_states":
            out = self.vision_tower(pixel_values.to(self.vision_tower.dtype), output_hidden_states=True)
            selected = out.hidden_states[cfg.vision_feature_layer]
        elif self.image_features == "feature_maps":
            out = self.vision_tower(pixel_values.to(self.vision_tower.dtype))
            selected = out.feature_maps[cfg.vision_feature_layer]
        else:
            raise ValueError(f"image_features must be one of {IMAGE_FEATURE_SOURCES}, not {self.image_features!r}")
        if cfg.vision_feature_select_strategy == "default":
            selected = selected[:, 1:]  # drop CLS
        return selected

    def get_image_features(
        self,
        pixel_values: torch.FloatTensor,
        vision_feature_layer: int | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs: object,
    ) -> list[torch.Tensor]:
        """Projected image features, one [tokens, d_text] tensor per image (LlavaModel's contract)."""
        if vision_feature_layer not in (None, self.config.vision_feature_layer) or vision_feature_select_strategy not in (
            None,
            self.config.vision_feature_select_strategy,
        ):
            raise ValueError("MAIRA-2 uses the feature layer and strategy of its config; do not override them")
        return list(self.multi_modal_projector(self.select_image_features(pixel_values)))


class Maira2ForConditionalGeneration(LlavaForConditionalGeneration):
    """MAIRA-2: `Maira2Model` + LM head; `generate` and the forward pass are LLaVA's."""

    config_class = Maira2Config
    _checkpoint_conversion_mapping: dict[str, str] = {}  # radsteer maps the official keys itself (loading.py)

    def __init__(self, config: Maira2Config) -> None:
        LlavaPreTrainedModel.__init__(self, config)
        self.model = Maira2Model(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    @torch.inference_mode()
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """All images of a study → [n_images × tokens, d_text], in image order (one tower call)."""
        feats = self.model.get_image_features(pixel_values)
        return torch.cat(feats, dim=0)
