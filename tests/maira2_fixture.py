"""A tiny random MAIRA-2 snapshot in the official layout, written on the fly (nothing downloaded).

What matches the real `microsoft/maira-2` snapshot: the file set (config.json with `model_type`
"maira2", sharded safetensors + model.safetensors.index.json, tokenizer.json /
tokenizer_config.json with a chat template, preprocessor_config.json, processor_config.json,
generation_config.json), every config field radsteer reads, the checkpoint key names
(`language_model.model.*`, `language_model.lm_head.*`, `vision_tower.*`,
`multi_modal_projector.layers.*`) and the vocabulary layout (base vocabulary, then the 204
grounding tokens, then `<image>`). What differs: sizes (28-px images with patch 14 → 4 image
tokens per image; 2 decoder layers of width 32) and the tokenizer (a small BPE trained here).

The weights are written from *independent* reference modules — transformers' `Dinov2Backbone`
and `LlamaForCausalLM` and a plain `nn.Sequential` projector, exactly the modules the official
remote code built — so `reference_modules` can recompute MAIRA-2 by hand from the same files.

The chat template is a stand-in with the shape of MAIRA-2's (system sentence, USER, ASSISTANT);
radsteer always renders the snapshot's own template, so the real one is used with real weights.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

SYSTEM = "You are an expert radiology assistant tasked with interpreting a chest X-ray study."
CHAT_TEMPLATE = (
    "{{ '" + SYSTEM + "' }}"
    "{% for message in messages %}{{ ' ' + message['role'].upper() + ': ' }}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}"
    "{% elif item['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ ' ASSISTANT:' }}{% endif %}"
)

CORPUS = [
    SYSTEM,
    "Given the current frontal image only. Given the current frontal image the current lateral image "
    "and the prior frontal image. and the current lateral image. PRIOR_REPORT:",
    "Provide a structured description of the findings in the radiology study in comparison to the prior "
    "frontal image. INDICATION: TECHNIQUE: COMPARISON: N/A",
    "Each finding should be described as a self-contained plain-text sentence. If the finding is groundable, "
    "locate the finding in the current frontal chest X-ray image, with bounding boxes indicating all locations "
    "where it can be seen in the current frontal image. Otherwise, generate just the ungrounded finding without "
    "bounding boxes.",
    "USER: ASSISTANT: The lungs are clear. There is no pleural effusion or pneumothorax. Heart size is normal. "
    "Left lower lobe opacity, unchanged compared to prior. Dyspnoea. Cough. PA and lateral views. Chest X-ray.",
]
GROUNDING_TOKENS = ["<obj>", "</obj>", "<box>", "</box>"] + [f"<x{i}>" for i in range(100)] + [
    f"<y{i}>" for i in range(100)
]

IMAGE_SIZE, PATCH = 28, 14
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH) ** 2


def make_tokenizer():
    """A Llama-style BPE tokenizer: <unk> <s> </s>, base vocab, grounding tokens, <image>, <pad>."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation),
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in GROUNDING_TOKENS])
    fast = LlamaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<pad>"})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def official_config(tokenizer) -> dict[str, Any]:
    """config.json in the official layout, tiny sizes."""
    vocab = len(tokenizer)
    return {
        "architectures": ["Maira2ForConditionalGeneration"],
        "auto_map": {"AutoConfig": "configuration_maira2.Maira2Config",
                     "AutoModelForCausalLM": "modeling_maira2.Maira2ForConditionalGeneration"},
        "model_type": "maira2",
        "hidden_size": 32,
        "ignore_index": -100,
        "image_seq_length": 576,
        "image_token_index": tokenizer.convert_tokens_to_ids("<image>"),
        "multimodal_projector_bias": True,
        "pad_token_id": tokenizer.pad_token_id,
        "projector_hidden_act": "gelu",
        "projector_n_layers": 4,
        "torch_dtype": "float32",
        "transformers_version": "4.46.0.dev0",
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "default",
        "text_config": {
            "_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 4, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
            "rope_scaling": {"factor": 1.5, "type": "linear"}, "vocab_size": vocab, "torch_dtype": "float32",
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": False,
        },
        "vision_config": {
            "architectures": ["Dinov2Model"], "model_type": "dinov2", "hidden_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": 2, "mlp_ratio": 4, "image_size": IMAGE_SIZE, "patch_size": PATCH,
            "num_channels": 3, "apply_layernorm": True, "out_features": ["stage2"], "reshape_hidden_states": False,
            "use_mask_token": True, "layerscale_value": 1.0, "layer_norm_eps": 1e-6, "qkv_bias": True,
            "torch_dtype": "float32",
        },
    }


PREPROCESSOR = {
    "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5307, 0.5307, 0.5307],
    "image_processor_type": "BitImageProcessor", "image_std": [0.2583, 0.2583, 0.2583], "resample": 3,
    "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": IMAGE_SIZE},
}


def reference_modules(config: dict[str, Any]) -> dict[str, nn.Module]:
    """The three parts as the official remote code built them, from transformers' own classes."""
    from transformers import Dinov2Backbone, Dinov2Config, LlamaConfig, LlamaForCausalLM

    text = LlamaConfig(**{k: v for k, v in config["text_config"].items() if k != "architectures"})
    vision = Dinov2Config(**{k: v for k, v in config["vision_config"].items() if k != "architectures"})
    d_v, d_t = vision.hidden_size, text.hidden_size
    layers: list[nn.Module] = [nn.Linear(d_v, d_t)]
    for _ in range(config["projector_n_layers"] - 1):
        layers += [nn.GELU(), nn.Linear(d_t, d_t)]
    return {
        "vision_tower": Dinov2Backbone(vision).eval(),
        "multi_modal_projector.layers": nn.Sequential(*layers).eval(),
        "language_model": LlamaForCausalLM(text).eval(),
    }


def official_state_dict(config: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    modules = reference_modules(config)
    with torch.no_grad():  # larger logit gaps: greedy ties from fp noise would make tests flaky
        modules["language_model"].lm_head.weight.mul_(8.0)
        modules["vision_tower"].embeddings.mask_token.normal_()
    state: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        for key, value in module.state_dict().items():
            state[f"{prefix}.{key}"] = value.detach().clone().contiguous()
    return state


def load_reference(snapshot: Path) -> dict[str, nn.Module]:
    """Reference modules filled from the snapshot's shards with plain `load_state_dict(strict=True)`."""
    from safetensors.torch import load_file

    config = json.loads((snapshot / "config.json").read_text())
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(snapshot.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    modules = reference_modules(config)
    for prefix, module in modules.items():
        sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
        module.load_state_dict(sub, strict=True)
    return modules


def write_weights(snapshot: Path, state: dict[str, torch.Tensor]) -> None:
    """Two fp32 shards (language model | vision + projector) and the index, as the Hub writes them."""
    from safetensors.torch import save_file

    groups = {
        "model-00001-of-00002.safetensors": {k: v for k, v in state.items() if k.startswith("language_model.")},
        "model-00002-of-00002.safetensors": {k: v for k, v in state.items() if not k.startswith("language_model.")},
    }
    weight_map, total = {}, 0
    for name, tensors in groups.items():
        save_file(tensors, str(snapshot / name), metadata={"format": "pt"})
        for k, v in tensors.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()
    (snapshot / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2)
    )


def write_images(root: Path) -> dict[str, Path]:
    """Three distinct small radiograph-like images (different sizes and modes)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:40, 0:34]
    frontal = (60 + 2 * yy + rng.integers(0, 40, yy.shape)).astype(np.uint8)
    lateral = np.stack([(30 + 3 * np.mgrid[0:30, 0:44][1] + rng.integers(0, 30, (30, 44)))] * 3, -1).astype(np.uint8)
    prior = (200 - 3 * xx + rng.integers(0, 20, xx.shape)).astype(np.uint8)
    paths = {"frontal": root / "frontal.png", "lateral": root / "lateral.png", "prior_frontal": root / "prior.png"}
    Image.fromarray(frontal, "L").save(paths["frontal"])
    Image.fromarray(lateral, "RGB").save(paths["lateral"])
    Image.fromarray(prior, "L").save(paths["prior_frontal"])
    return paths


@dataclass
class TinySnapshot:
    path: Path
    config: dict[str, Any]
    images: dict[str, Path]
    cases_file: Path

    def study(self, **overrides: Any) -> dict[str, Any]:
        """A frontal + lateral + prior study with every text section."""
        case = {
            "case_id": "study1", "frontal": str(self.images["frontal"]), "lateral": str(self.images["lateral"]),
            "prior_frontal": str(self.images["prior_frontal"]), "prior_report": "Heart size is normal.",
            "indication": "Dyspnoea.", "technique": "PA and lateral views.", "comparison": "Chest X-ray.",
        }
        case.update(overrides)
        return case


def write_snapshot(
    path: Path,
    *,
    seed: int = 0,
    drop_keys: tuple[str, ...] = (),
    extra_keys: dict[str, torch.Tensor] | None = None,
    config_edit: dict[str, Any] | None = None,
) -> TinySnapshot:
    """Write the tiny snapshot; `drop_keys` / `extra_keys` / `config_edit` make broken variants."""
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer()
    tokenizer.save_pretrained(str(path))
    config = official_config(tokenizer)
    state = official_state_dict(config, seed=seed)
    for key in drop_keys:
        del state[key]
    state.update(extra_keys or {})
    if config_edit:
        config.update(config_edit)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    write_weights(path, state)
    (path / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2))
    (path / "processor_config.json").write_text(json.dumps({
        "processor_class": "Maira2Processor", "patch_size": PATCH, "vision_feature_select_strategy": "default",
        "num_additional_image_tokens": 1, "image_token": "<image>", "phrase_start_token": "<obj>",
        "phrase_end_token": "</obj>", "box_start_token": "<box>", "box_end_token": "</box>",
        "num_box_coord_bins": 100,
    }, indent=2))
    (path / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": tokenizer.pad_token_id}, indent=2))
    images = write_images(path.parent / f"{path.name}-images")
    cases_file = path.parent / f"{path.name}-cases.jsonl"
    with cases_file.open("w") as fh:
        fh.write(json.dumps({"case_id": "full", "frontal": f"{path.name}-images/frontal.png",
                             "lateral": f"{path.name}-images/lateral.png",
                             "prior_frontal": f"{path.name}-images/prior.png", "prior_report": "Clear lungs.",
                             "indication": "Cough.", "split": "test"}) + "\n")
        fh.write(json.dumps({"case_id": "frontal-only", "frontal": f"{path.name}-images/frontal.png",
                             "technique": "PA view."}) + "\n")
    return TinySnapshot(path=path, config=config, images=images, cases_file=cases_file)


# -- pytest fixtures (import them into a test module to use them) ----------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def maira2_snapshot(tmp_path_factory) -> TinySnapshot:
    return write_snapshot(tmp_path_factory.mktemp("maira2") / "maira-2")


@pytest.fixture(scope="session")
def maira2_adapter(maira2_snapshot):
    from steering.maira2.adapter import Maira2Adapter

    return Maira2Adapter.from_pretrained(maira2_snapshot.path, dtype="float32", device="cpu")
