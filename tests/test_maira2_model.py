"""MAIRA-2 natively: loading the official layout, and the wiring tower → projector → LM."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from steering.errors import RadsteerError
from steering.maira2.adapter import Maira2Adapter
from steering.maira2.config import config_from_dict, load_config
from tests import maira2_fixture as fx
from tests.maira2_fixture import TOKENS_PER_IMAGE, load_reference, write_snapshot

maira2_snapshot, maira2_adapter = fx.maira2_snapshot, fx.maira2_adapter  # pytest fixtures


def hand_composition(ref, input_ids, pixels, image_token_id, *, layernormed=True):
    """MAIRA-2 by hand from the reference modules: features at the image-token positions."""
    out = ref["vision_tower"](pixels, output_hidden_states=True)
    fmap = out.feature_maps[-1] if layernormed else out.hidden_states[-1]
    feats = ref["multi_modal_projector.layers"](fmap[:, 1:])  # CLS dropped
    lm = ref["language_model"]
    embeds = lm.get_input_embeddings()(input_ids).clone()
    mask = input_ids == image_token_id
    embeds[mask] = feats.reshape(-1, embeds.shape[-1])
    return lm(inputs_embeds=embeds).logits


@torch.no_grad()
def test_logits_equal_the_hand_composition(maira2_snapshot, maira2_adapter) -> None:
    adapter, case = maira2_adapter, maira2_snapshot.study()
    ref = load_reference(maira2_snapshot.path)
    ids = torch.tensor([adapter.prompt_ids(case)])
    pixels = adapter.pixel_values(case)
    assert pixels.shape == (3, 3, 28, 28)
    expected = hand_composition(ref, ids, pixels, adapter.image_token_id)

    # the engine's path: features computed once, scattered by `embed`, LM fed inputs_embeds
    embeds = adapter.embed(ids, [adapter.case_extras(case)])
    via_embeds = adapter.model(inputs_embeds=embeds).logits
    # transformers' own LLaVA path with pixels (our get_image_features inside LlavaModel.forward)
    via_pixels = adapter.model(input_ids=ids, pixel_values=pixels).logits
    torch.testing.assert_close(via_embeds, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(via_pixels, expected, rtol=1e-5, atol=1e-5)

    # the comparison can fail: raw (not layer-normed) hidden states give other logits
    wrong = hand_composition(ref, ids, pixels, adapter.image_token_id, layernormed=False)
    assert not torch.allclose(wrong, expected, atol=1e-3)


@torch.no_grad()
def test_image_features_hidden_states_equal_their_hand_composition(maira2_snapshot, maira2_adapter) -> None:
    """`image_features: hidden_states` (the later official code): the raw last hidden state of the
    backbone feeds the projector; the default stays the layer-normed feature map."""
    case = maira2_snapshot.study()
    raw = Maira2Adapter.from_pretrained(maira2_snapshot.path, dtype="float32", device="cpu",
                                        image_features="hidden_states")
    assert maira2_adapter.model.model.image_features == "feature_maps" and maira2_adapter.name == "maira-2"
    assert raw.name == "maira-2-hidden_states" and raw.load_facts["image_features"] == "hidden_states"
    ref = load_reference(maira2_snapshot.path)
    ids = torch.tensor([raw.prompt_ids(case)])
    pixels = raw.pixel_values(case)
    expected = hand_composition(ref, ids, pixels, raw.image_token_id, layernormed=False)
    torch.testing.assert_close(raw.model(inputs_embeds=raw.embed(ids, [raw.case_extras(case)])).logits, expected,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(raw.model(input_ids=ids, pixel_values=pixels).logits, expected, rtol=1e-5, atol=1e-5)
    layernormed = hand_composition(ref, ids, pixels, raw.image_token_id)
    assert not torch.allclose(layernormed, expected, atol=1e-3)  # the two sources really differ here
    with pytest.raises(RadsteerError, match="image_features must be one of"):
        Maira2Adapter.from_pretrained(maira2_snapshot.path, dtype="float32", device="cpu", image_features="cls")


def test_generates_from_frontal_lateral_prior(maira2_snapshot, maira2_adapter) -> None:
    adapter = maira2_adapter
    assert adapter.load_facts == {"tensors": 72, "shards": 2, "dtype": "float32", "device": "cpu",
                                  "image_features": "feature_maps"}
    assert adapter.layers_path == "model.language_model.layers" and adapter.num_layers == 2
    assert adapter.tokens_per_image == TOKENS_PER_IMAGE and adapter.image_token_ids() == {adapter.image_token_id}
    case = maira2_snapshot.study()
    extras = adapter.case_extras(case)
    assert extras["n_images"] == 3 and extras["image_features"].shape == (3 * TOKENS_PER_IMAGE, 32)
    text = adapter.generate_report(case, max_new_tokens=6)
    assert isinstance(text, str) and "<" not in text  # grounding markup never reaches the text
    # a different prior image changes the image features, hence (deterministically) the logits
    other = maira2_snapshot.study(prior_frontal=maira2_snapshot.images["frontal"])
    assert not torch.equal(adapter.case_extras(other)["image_features"], extras["image_features"])


@torch.no_grad()
def test_left_padded_batch_equals_single_rows(maira2_snapshot, maira2_adapter) -> None:
    adapter = maira2_adapter
    cases = [maira2_snapshot.study(), maira2_snapshot.study(lateral=None, prior_frontal=None, indication=None)]
    prompts = [adapter.prompt_ids(c) for c in cases]
    extras = [adapter.case_extras(c) for c in cases]
    width = max(map(len, prompts))
    ids = torch.full((2, width), adapter.pad_token_id)
    mask = torch.zeros((2, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    batched = adapter.model(inputs_embeds=adapter.embed(ids, extras), attention_mask=mask).logits[:, -1]
    for i, p in enumerate(prompts):
        one = torch.tensor([p])
        single = adapter.model(inputs_embeds=adapter.embed(one, [extras[i]])).logits[0, -1]
        torch.testing.assert_close(batched[i], single, rtol=1e-4, atol=1e-4)
    with pytest.raises(RadsteerError, match="image tokens but its case has"):
        adapter.embed(ids, [extras[1], extras[0]])


def test_bfloat16_load_keeps_rotary_buffers_fp32(maira2_snapshot) -> None:
    adapter = Maira2Adapter.from_pretrained(maira2_snapshot.path, dtype="bfloat16", device="cpu")
    assert {p.dtype for p in adapter.model.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in adapter.model.parameters())
    inv_freq = adapter.model.model.language_model.rotary_emb.inv_freq
    assert inv_freq.dtype == torch.float32 and inv_freq.device.type == "cpu"
    assert adapter.case_extras(maira2_snapshot.study())["image_features"].dtype == torch.bfloat16
    assert isinstance(adapter.generate_report(maira2_snapshot.study(), max_new_tokens=3), str)


def test_missing_and_unexpected_keys_are_named(tmp_path) -> None:
    missing = write_snapshot(tmp_path / "missing", drop_keys=("multi_modal_projector.layers.4.bias",))
    with pytest.raises(RadsteerError, match=r"missing key\(s\).*multi_modal_projector\.layers\.4\.bias"):
        Maira2Adapter.from_pretrained(missing.path, device="cpu")
    extra = write_snapshot(tmp_path / "extra", extra_keys={"vision_tower.embeddings.register_tokens": torch.zeros(1)})
    with pytest.raises(RadsteerError, match=r"unexpected key\(s\).*vision_tower\.embeddings\.register_tokens"):
        Maira2Adapter.from_pretrained(extra.path, device="cpu")
    lm = write_snapshot(tmp_path / "lm", extra_keys={"language_model.model.layers.2.mlp.up_proj.weight":
                                                      torch.zeros(64, 32)})
    with pytest.raises(RadsteerError, match=r"unexpected key\(s\).*language_model\.model\.layers\.2\.mlp"):
        Maira2Adapter.from_pretrained(lm.path, device="cpu")


def test_shape_and_shard_problems_are_named(tmp_path) -> None:
    snap = write_snapshot(tmp_path / "snap", config_edit={})
    cfg = json.loads((snap.path / "config.json").read_text())
    cfg["text_config"]["intermediate_size"] = 48
    (snap.path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RadsteerError, match=r"language_model\.model\.layers\.0\.mlp\.down_proj\.weight.*shape"):
        Maira2Adapter.from_pretrained(snap.path, device="cpu")
    (snap.path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(RadsteerError, match="shard model-00002-of-00002.safetensors .* missing"):
        Maira2Adapter.from_pretrained(snap.path, device="cpu")


def test_missing_snapshot_says_what_to_download(tmp_path) -> None:
    with pytest.raises(RadsteerError, match=r"huggingface-cli download microsoft/maira-2 --local-dir .*nowhere"):
        Maira2Adapter.from_pretrained(tmp_path / "nowhere", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RadsteerError, match="config.json missing.*gated on Hugging Face"):
        Maira2Adapter.from_pretrained(tmp_path / "empty", device="cpu")


def test_config_errors_name_field_and_file(maira2_snapshot, tmp_path) -> None:
    raw = json.loads((maira2_snapshot.path / "config.json").read_text())
    for field in ("projector_n_layers", "vision_config", "image_token_index", "vision_feature_select_strategy"):
        broken = {k: v for k, v in raw.items() if k != field}
        with pytest.raises(RadsteerError, match=f"x/config.json: required field '{field}' is missing"):
            config_from_dict(broken, "x/config.json")
    with pytest.raises(RadsteerError, match="'model_type' is 'llava', expected 'maira2'"):
        config_from_dict({**raw, "model_type": "llava"})
    with pytest.raises(RadsteerError, match="vision_config.model_type is 'clip_vision_model'"):
        config_from_dict({**raw, "vision_config": {**raw["vision_config"], "model_type": "clip_vision_model"}})
    with pytest.raises(RadsteerError, match="'vision_feature_layer' must be one integer"):
        config_from_dict({**raw, "vision_feature_layer": [-1, -2]})
    shutil.copytree(maira2_snapshot.path, tmp_path / "s", ignore=shutil.ignore_patterns("*.safetensors"))
    (tmp_path / "s" / "config.json").write_text("{not json")
    with pytest.raises(RadsteerError, match=r"s/config.json is not valid JSON"):
        load_config(tmp_path / "s")


def official_7b_config() -> dict:
    """The facts of the real microsoft/maira-2 config.json (docs/design.md, "MAIRA-2")."""
    return {
        "architectures": ["Maira2ForConditionalGeneration"], "model_type": "maira2", "image_token_index": 32204,
        "projector_n_layers": 4, "projector_hidden_act": "gelu", "multimodal_projector_bias": True,
        "vision_feature_layer": -1, "vision_feature_select_strategy": "default",
        "text_config": {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096,
                        "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008,
                        "vocab_size": 32207, "rope_scaling": {"type": "linear", "factor": 1.5},
                        "max_position_embeddings": 4096},
        "vision_config": {"model_type": "dinov2", "num_hidden_layers": 12, "hidden_size": 768,
                          "num_attention_heads": 12, "image_size": 518, "patch_size": 14, "apply_layernorm": True,
                          "out_features": ["stage12"], "reshape_hidden_states": False, "use_mask_token": True},
    }


def test_real_config_gives_the_official_key_layout() -> None:
    """On the meta device (no memory): the 7B model's parameters are the official 522 keys."""
    from steering.maira2.loading import build_empty_model, check_keys

    config = config_from_dict(official_7b_config())
    assert config.tokens_per_image() == 1369 and config.image_token_index == 32204
    model = build_empty_model(config)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert len(shapes) == 522
    assert shapes["model.multi_modal_projector.layers.0.weight"] == (4096, 768)
    for i in (2, 4, 6):
        assert shapes[f"model.multi_modal_projector.layers.{i}.weight"] == (4096, 4096)
        assert shapes[f"model.multi_modal_projector.layers.{i}.bias"] == (4096,)
    assert shapes["lm_head.weight"] == (32207, 4096)
    official = [
        "language_model.model.embed_tokens.weight", "language_model.lm_head.weight",
        "language_model.model.layers.31.mlp.down_proj.weight", "vision_tower.embeddings.mask_token",
        "vision_tower.encoder.layer.11.layer_scale2.lambda1", "vision_tower.layernorm.weight",
        "multi_modal_projector.layers.6.bias",
    ]
    with pytest.raises(RadsteerError, match="missing key"):  # a subset maps, the rest is named missing
        check_keys(official, model)
    assert model.model.language_model.layers[15] is not None
