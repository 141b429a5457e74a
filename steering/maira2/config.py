"""The official MAIRA-2 `config.json`, read into transformers config objects.

The snapshot's config names `model_type` "maira2" and a remote-code class that only runs on
transformers < 4.52, so `AutoConfig` cannot read it without `trust_remote_code`. Its fields are
plain LLaVA fields plus `projector_n_layers`; we read them ourselves into a `LlavaConfig`
subclass with a `Dinov2Config` vision config and a `LlamaConfig` text config, and say exactly
which field of which file is missing or wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import Dinov2Config, LlamaConfig, LlavaConfig

from steering.errors import RadsteerError

REQUIRED_FIELDS = (
    "text_config",
    "vision_config",
    "image_token_index",
    "projector_n_layers",
    "projector_hidden_act",
    "multimodal_projector_bias",
    "vision_feature_layer",
    "vision_feature_select_strategy",
)


class Maira2Config(LlavaConfig):
    """LLaVA config + the depth of MAIRA-2's MLP projector (`projector_n_layers`)."""

    model_type = "maira2"

    def __init__(self, projector_n_layers: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.projector_n_layers = projector_n_layers

    @property
    def image_size(self) -> int:
        return int(self.vision_config.image_size)

    @property
    def patch_size(self) -> int:
        return int(self.vision_config.patch_size)

    def tokens_per_image(self, height: int | None = None, width: int | None = None) -> int:
        """Image-token positions one image fills: a patch grid, plus CLS only for strategy "full"."""
        h = height if height is not None else self.image_size
        w = width if width is not None else self.image_size
        n = (h // self.patch_size) * (w // self.patch_size)
        return n + (1 if self.vision_feature_select_strategy == "full" else 0)


def _sub_config(raw: dict[str, Any], key: str, model_type: str, cls: type, file: Path) -> Any:
    sub = raw[key]
    if not isinstance(sub, dict):
        raise RadsteerError(f"{file}: field {key!r} must be an object, not {type(sub).__name__}")
    got = sub.get("model_type", model_type)
    if got != model_type:
        raise RadsteerError(f"{file}: {key}.model_type is {got!r}; MAIRA-2 needs {model_type!r}")
    fields = {k: v for k, v in sub.items() if k not in ("architectures", "_name_or_path", "torch_dtype", "dtype")}
    try:
        return cls(**fields)
    except (TypeError, ValueError) as exc:
        raise RadsteerError(f"{file}: field {key!r} is not a valid {model_type} config: {exc}") from None


def config_from_dict(raw: dict[str, Any], file: Path | str = "config.json") -> Maira2Config:
    """Build the config from the parsed official `config.json` (`file` is named in errors)."""
    file = Path(file)
    if raw.get("model_type") != "maira2":
        raise RadsteerError(
            f"{file}: field 'model_type' is {raw.get('model_type')!r}, expected 'maira2' "
            "(is this a microsoft/maira-2 snapshot?)"
        )
    for key in REQUIRED_FIELDS:
        if key not in raw:
            raise RadsteerError(f"{file}: required field {key!r} is missing")
    text_config = _sub_config(raw, "text_config", "llama", LlamaConfig, file)
    vision_config = _sub_config(raw, "vision_config", "dinov2", Dinov2Config, file)

    n_layers = raw["projector_n_layers"]
    if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1:
        raise RadsteerError(f"{file}: field 'projector_n_layers' must be an integer >= 1, not {n_layers!r}")
    vfl = raw["vision_feature_layer"]
    if not isinstance(vfl, int) or isinstance(vfl, bool):
        raise RadsteerError(f"{file}: field 'vision_feature_layer' must be one integer (MAIRA-2 uses -1), not {vfl!r}")
    strategy = raw["vision_feature_select_strategy"]
    if strategy not in ("default", "full"):
        raise RadsteerError(
            f"{file}: field 'vision_feature_select_strategy' must be 'default' or 'full', not {strategy!r}"
        )
    if not vision_config.out_features:
        raise RadsteerError(f"{file}: field 'vision_config.out_features' is empty; MAIRA-2 uses the last stage")
    if not -len(vision_config.out_features) <= vfl < len(vision_config.out_features):
        raise RadsteerError(
            f"{file}: vision_feature_layer {vfl} does not index vision_config.out_features "
            f"{vision_config.out_features}"
        )
    if vision_config.reshape_hidden_states:
        raise RadsteerError(f"{file}: vision_config.reshape_hidden_states must be false for MAIRA-2")

    extra = {
        k: raw[k]
        for k in ("pad_token_id", "bos_token_id", "eos_token_id", "image_seq_length")
        if raw.get(k) is not None
    }
    return Maira2Config(
        projector_n_layers=n_layers,
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=int(raw["image_token_index"]),
        projector_hidden_act=str(raw["projector_hidden_act"]),
        multimodal_projector_bias=bool(raw["multimodal_projector_bias"]),
        vision_feature_layer=vfl,
        vision_feature_select_strategy=strategy,
        tie_word_embeddings=False,
        **extra,
    )


def load_config(snapshot: str | Path) -> Maira2Config:
    """Read `<snapshot>/config.json`; errors name the file and the field."""
    file = Path(snapshot) / "config.json"
    if not file.is_file():
        raise RadsteerError(f"{file} not found: the MAIRA-2 snapshot directory must contain config.json")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RadsteerError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise RadsteerError(f"{file} must hold a JSON object")
    return config_from_dict(raw, file)
