"""`Maira2Adapter`: MAIRA-2 for the steering engine.

Per case, the engine asks for the prompt ids once and for `case_extras` once; `case_extras` runs
the vision tower and projector on all of the study's images in a single call and keeps the
projected features, which every steered row of the case then reuses through `embed` (text
embeddings of the left-padded batch, features written into each row's image-token positions).
`model.generate(inputs_embeds=…)` therefore never sees pixels: no row recomputes image features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from steering.adapters import ModelAdapter
from steering.errors import RadsteerError
from steering.maira2.defaults import max_new_tokens as official_max_new_tokens
from steering.maira2.grounding import grounded_to_plain, grounding_records, parse_grounded
from steering.maira2.images import ImageSettings, open_image, pixel_values
from steering.maira2.modeling import Maira2ForConditionalGeneration
from steering.maira2.processing import PromptBuilder, find_chat_template

DEFAULT_LAYER = 15  # the layer of MAIRA-2's released SAE (microsoft/maira-2-sae)
IMAGE_FIELDS = ("frontal", "lateral", "prior_frontal")


class Maira2Adapter(ModelAdapter):
    """MAIRA-2 (native modules) + its tokenizer, chat template and image preprocessing."""

    def __init__(
        self,
        model: Maira2ForConditionalGeneration,
        tokenizer: Any,
        *,
        image_settings: ImageSettings,
        chat_template: str,
        grounded: bool = False,
        name: str = "maira-2",
        path: str | None = None,
        load_facts: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model, tokenizer, name=name, path=path)
        self.config = model.config
        self.image_settings = image_settings
        self.grounded = grounded
        self.load_facts = dict(load_facts or {})
        height, width = image_settings.output_size(self.config.image_size, self.config.image_size)
        self.tokens_per_image = self.config.tokens_per_image(height, width)
        self.prompts = PromptBuilder(
            tokenizer, chat_template, image_token_id=self.image_token_id,
            tokens_per_image=self.tokens_per_image, grounded=grounded,
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: str = "auto",
        device: str = "auto",
        grounded: bool = False,
        name: str | None = None,
        image_features: str = "feature_maps",
    ) -> Maira2Adapter:
        """Load a local microsoft/maira-2 snapshot (bf16 on a GPU, fp32 on the CPU by default).

        `image_features`: "feature_maps" (the backbone's layer-normed feature map, the default) or
        "hidden_states" (its raw last hidden state) — the two published versions of the official
        code differ here (steering/maira2/modeling.py); the choice is part of the adapter's name,
        hence of the settings hash, and recorded in the manifest."""
        from steering.maira2.loading import load_model, load_tokenizer
        from steering.maira2.modeling import IMAGE_FEATURE_SOURCES

        if image_features not in IMAGE_FEATURE_SOURCES:
            raise RadsteerError(f"image_features must be one of {', '.join(IMAGE_FEATURE_SOURCES)}, "
                                f"not {image_features!r}")
        path = Path(path)
        model, facts = load_model(path, dtype=dtype, device=device)  # checks the directory first
        model.model.image_features = image_features
        tokenizer = load_tokenizer(path)
        default = "maira-2" + ("-grounded" if grounded else "")
        return cls(
            model, tokenizer, image_settings=ImageSettings.from_snapshot(path),
            chat_template=find_chat_template(tokenizer, path), grounded=grounded,
            name=name or default + ("" if image_features == "feature_maps" else f"-{image_features}"),
            path=str(path), load_facts={**facts, "image_features": image_features},
        )

    # -- model facts ------------------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_index)

    def image_token_ids(self) -> set[int]:
        return {self.image_token_id}

    @property
    def default_layer(self) -> int:
        """Layer 15 (MAIRA-2's SAE layer); a smaller test model uses its middle layer."""
        return DEFAULT_LAYER if self.num_layers > DEFAULT_LAYER else self.num_layers // 2

    @property
    def default_max_new_tokens(self) -> int:
        return official_max_new_tokens(self.grounded)

    # -- per case ---------------------------------------------------------------------------
    def prompt_text(self, case: Mapping[str, Any]) -> str:
        """The rendered prompt, one image placeholder per image (for inspection and manifests)."""
        self._require_frontal(case)
        return self.prompts.render(case)

    def prompt_ids(self, case: Mapping[str, Any]) -> list[int]:
        self._require_frontal(case)
        return self.prompts.ids(case)

    def case_images(self, case: Mapping[str, Any]) -> tuple[list[Image.Image], list[str]]:
        """The study's images in prompt order: frontal, lateral (if any), prior frontal (if any)."""
        self._require_frontal(case)
        images, names = [], []
        for field in IMAGE_FIELDS:
            value = case.get(field)
            if value is None:
                continue
            what = f"{field} image of case {case.get('case_id', '?')!r}"
            images.append(value if isinstance(value, Image.Image) else open_image(value, what=what))
            names.append(what)
        return images, names

    def pixel_values(self, case: Mapping[str, Any]) -> torch.Tensor:
        images, names = self.case_images(case)
        return pixel_values(images, self.image_settings, names)

    @torch.inference_mode()
    def case_extras(self, case: Mapping[str, Any]) -> dict[str, Any]:
        """Projected image features of the whole study: one vision-tower call per case."""
        pixels = self.pixel_values(case).to(self.device)
        features = self.model.image_features(pixels)  # [n_images × tokens, d]
        return {"image_features": features, "n_images": int(pixels.shape[0])}

    def embed(self, input_ids: torch.Tensor, extras: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """Text embeddings with each row's image features in its image-token positions."""
        if len(extras) != input_ids.shape[0]:
            raise ValueError(f"{len(extras)} extras for a batch of {input_ids.shape[0]} rows")
        embeds = self.model.get_input_embeddings()(input_ids)
        is_image = input_ids == self.image_token_id
        for row, extra in enumerate(extras):
            positions = is_image[row]
            n = int(positions.sum())
            features = extra.get("image_features") if extra else None
            if features is None:
                if n:
                    raise RadsteerError(f"row {row} has {n} image tokens but no image features (case_extras missing)")
                continue
            if features.shape[0] != n:
                raise RadsteerError(
                    f"row {row} has {n} image tokens but its case has {features.shape[0]} image features"
                )
            embeds[row, positions] = features.to(device=embeds.device, dtype=embeds.dtype)
        return embeds

    def decode(self, token_ids: Sequence[int]) -> str:
        """Plain report text (grounded output loses its boxes)."""
        return grounded_to_plain(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def clean_text(self, text: str) -> str:
        return grounded_to_plain(text)

    def decode_grounded(self, token_ids: Sequence[int]) -> list[tuple[str, list | None]]:
        """Phrases with their boxes (normalised to the centre-cropped frontal image)."""
        return parse_grounded(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    @property
    def grounds_reports(self) -> bool:
        return self.grounded

    def grounding(self, raw_text: str) -> list[dict[str, Any]] | None:
        """Grounded reporting: the phrases and boxes the engine stores beside the plain text."""
        return grounding_records(raw_text) if self.grounded else None

    # -- convenience ------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_report(self, case: Mapping[str, Any], *, max_new_tokens: int | None = None) -> str:
        """One unsteered greedy findings section for one study (no engine, no hooks)."""
        ids = torch.tensor([self.prompt_ids(case)], device=self.device)
        embeds = self.embed(ids, [self.case_extras(case)])
        out = self.model.generate(
            inputs_embeds=embeds, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
            max_new_tokens=max_new_tokens or self.default_max_new_tokens, pad_token_id=self.pad_token_id,
        )
        return self.decode(out[0].tolist())

    @staticmethod
    def _require_frontal(case: Mapping[str, Any]) -> None:
        if case.get("frontal") is None:
            raise RadsteerError(f"case {case.get('case_id', '?')!r} has no 'frontal' image; MAIRA-2 needs one")
