"""MAIRA-2 prompt text, image-token counts, pixels and grounded output."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from steering.errors import RadsteerError
from steering.maira2.grounding import grounded_to_plain, parse_grounded
from steering.maira2.images import ImageSettings, normalise_greyscale, preprocess
from steering.maira2.processing import PromptBuilder, find_chat_template, reporting_messages, user_text
from tests import maira2_fixture as fx
from tests.maira2_fixture import PREPROCESSOR, SYSTEM, TOKENS_PER_IMAGE

maira2_snapshot, maira2_adapter = fx.maira2_snapshot, fx.maira2_adapter  # pytest fixtures

# The documented format (Maira2Processor._construct_chat_messages_reporting), written out.
IMAGE_SENTENCES = {
    (False, False): "Given the current frontal image only<image>",
    (True, False): "Given the current frontal image<image> and the current lateral image<image>",
    (False, True): "Given the current frontal image<image> and the prior frontal image<image>",
    (True, True): "Given the current frontal image<image> the current lateral image<image> "
                  "and the prior frontal image<image>",
}
REQUEST = " Provide a structured description of the findings in the radiology study in comparison to the prior " \
          "frontal image."
SECTIONS = {"indication": "Shortness of breath.", "technique": "PA view.", "comparison": "2019-01-02.",
            "prior_report": "No acute findings."}


def expected_user_text(has_lateral: bool, has_prior: bool, present: dict[str, str | None]) -> str:
    def sec(key: str) -> str:
        return present.get(key) or "N/A"

    text = IMAGE_SENTENCES[(has_lateral, has_prior)]
    if has_prior:
        text += f" PRIOR_REPORT: {sec('prior_report')}"
    return text + f"{REQUEST} INDICATION: {sec('indication')} TECHNIQUE: {sec('technique')} " \
                  f"COMPARISON: {sec('comparison')}"


def combinations():
    for has_lateral, has_prior in itertools.product((False, True), repeat=2):
        for mask in itertools.product((False, True), repeat=4):
            present = {k: (v if keep else None) for (k, v), keep in zip(SECTIONS.items(), mask, strict=True)}
            yield has_lateral, has_prior, present


def test_prompt_text_and_image_tokens_for_every_combination(maira2_snapshot, maira2_adapter) -> None:
    adapter, images = maira2_adapter, maira2_snapshot.images
    bos, image_id = adapter.tokenizer.bos_token_id, adapter.image_token_id
    n_checked = 0
    for has_lateral, has_prior, present in combinations():
        case = {"case_id": "c", "frontal": str(images["frontal"]),
                "lateral": str(images["lateral"]) if has_lateral else None,
                "prior_frontal": str(images["prior_frontal"]) if has_prior else None, **present}
        msgs = reporting_messages(has_lateral=has_lateral, has_prior=has_prior, **present)
        user = expected_user_text(has_lateral, has_prior, present)
        assert user_text(msgs) == user
        assert adapter.prompt_text(case) == f"{SYSTEM} USER: {user} ASSISTANT:"  # via the snapshot's template
        ids = adapter.prompt_ids(case)
        n_images = 1 + has_lateral + has_prior
        assert ids[0] == bos and ids.count(image_id) == n_images * TOKENS_PER_IMAGE
        # each image is one contiguous run of TOKENS_PER_IMAGE placeholders
        runs = [len(list(g)) for k, g in itertools.groupby(ids) if k == image_id]
        assert runs == [TOKENS_PER_IMAGE] * n_images
        n_checked += 1
    assert n_checked == 64


def test_empty_sections_become_na_and_prior_report_needs_a_prior_image() -> None:
    msgs = reporting_messages(has_lateral=False, has_prior=False, indication="", technique=None,
                              comparison=3, prior_report="ignored without a prior image")
    text = user_text(msgs)
    assert "INDICATION: N/A TECHNIQUE: N/A COMPARISON: N/A" in text and "PRIOR_REPORT" not in text
    items = msgs[0]["content"]
    assert [i["index"] for i in items if i["type"] == "image"] == [0]


def test_grounded_prompt_asks_for_boxes() -> None:
    msgs = reporting_messages(has_lateral=True, has_prior=False, grounded=True)
    text = user_text(msgs)
    assert text.startswith(IMAGE_SENTENCES[(True, False)] + REQUEST + " Each finding should be described as a "
                           "self-contained plain-text sentence. If the finding is groundable, locate the finding")
    assert text.endswith("generate just the ungrounded finding without bounding boxes. INDICATION: N/A "
                         "TECHNIQUE: N/A COMPARISON: N/A")


def test_prompt_errors(maira2_adapter) -> None:
    with pytest.raises(RadsteerError, match="case 'x' has no 'frontal' image"):
        maira2_adapter.prompt_ids({"case_id": "x", "lateral": "a.png"})
    with pytest.raises(RadsteerError, match="no token with id 999999"):
        PromptBuilder(maira2_adapter.tokenizer, "t", image_token_id=999999, tokens_per_image=4)
    bad = PromptBuilder(maira2_adapter.tokenizer, "{{ 'no images here' }}",
                        image_token_id=maira2_adapter.image_token_id, tokens_per_image=4)
    with pytest.raises(RadsteerError, match="wrote 0 image placeholder"):
        bad.ids({"frontal": "f.png"})


def test_chat_template_sources(maira2_adapter, tmp_path) -> None:
    class NoTemplate:
        chat_template = None

    (tmp_path / "chat_template.json").write_text('{"chat_template": "{{ 1 }}"}')
    assert find_chat_template(NoTemplate(), tmp_path) == "{{ 1 }}"
    with pytest.raises(RadsteerError, match="no chat template in the MAIRA-2 snapshot"):
        find_chat_template(NoTemplate(), tmp_path / "other")
    assert find_chat_template(maira2_adapter.tokenizer, None) == fx.CHAT_TEMPLATE


# -- pixels -----------------------------------------------------------------------------------
RAD_DINO = {**PREPROCESSOR, "crop_size": {"height": 518, "width": 518}, "size": {"shortest_edge": 518}}


@pytest.mark.parametrize("config", [PREPROCESSOR, RAD_DINO], ids=["tiny", "rad-dino-518"])
@pytest.mark.parametrize("size", [(40, 34), (33, 61), (700, 520), (12, 12)])
def test_pixels_equal_transformers_bit_image_processor(config, size) -> None:
    """Our PIL/numpy pipeline gives the pixels of the official image processor."""
    from transformers import BitImageProcessor

    rng = np.random.default_rng(size[0])
    raw = Image.fromarray(rng.integers(20, 200, size=(size[1], size[0])).astype(np.uint8), "L")
    ours = preprocess(raw, ImageSettings.from_dict(config))
    official = BitImageProcessor(**{k: v for k, v in config.items() if k != "image_processor_type"})
    theirs = official(normalise_greyscale(raw), return_tensors="np")["pixel_values"][0]
    assert ours.shape == theirs.shape == (3, config["crop_size"]["height"], config["crop_size"]["width"])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_greyscale_min_max_normalisation() -> None:
    rgb = Image.fromarray(np.array([[[10, 10, 10], [60, 60, 60]], [[35, 35, 35], [60, 60, 60]]], np.uint8), "RGB")
    grey = np.asarray(normalise_greyscale(rgb))
    assert grey.tolist() == [[0, 255], [127, 255]]
    with pytest.raises(RadsteerError, match="frontal image is blank"):
        normalise_greyscale(Image.new("L", (8, 8), 7), what="frontal")


def test_preprocessor_config_is_read_from_the_snapshot(maira2_snapshot, maira2_adapter, tmp_path) -> None:
    settings = ImageSettings.from_snapshot(maira2_snapshot.path)
    assert settings.crop_size == (28, 28) and settings.shortest_edge == 28 and settings.resample == 3
    assert maira2_adapter.image_settings == settings
    assert ImageSettings.from_dict(RAD_DINO).output_size(2000, 1600) == (518, 518)
    with pytest.raises(RadsteerError, match="preprocessor_config.json not found"):
        ImageSettings.from_snapshot(tmp_path)
    with pytest.raises(RadsteerError, match="field 'crop_size' is missing"):
        ImageSettings.from_dict({"do_center_crop": True})


def test_unreadable_image_is_named(maira2_adapter, tmp_path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("not a png")
    with pytest.raises(RadsteerError, match=r"frontal image of case 'c1' .*bad.png cannot be read"):
        maira2_adapter.case_extras({"case_id": "c1", "frontal": str(bad)})
    with pytest.raises(RadsteerError, match=r"lateral image of case 'c1' image not found: .*gone.png"):
        maira2_adapter.case_extras({"case_id": "c1", "frontal": _gradient(), "lateral": str(tmp_path / "gone.png")})


def _gradient() -> Image.Image:
    return Image.fromarray(np.tile(np.arange(30, dtype=np.uint8) * 8, (30, 1)), "L")


# -- grounded output --------------------------------------------------------------------------
GROUNDED = ("<obj>Left lower lobe opacity<box><x10><y55><x40><y90></box><box><x60><y50><x70><y60></box></obj>"
            "<obj>No pneumothorax.</obj><obj>Heart size is normal<box><x30><y40><x70><y75></box></obj>")


def test_grounded_output_to_plain_text_and_boxes() -> None:
    assert grounded_to_plain(GROUNDED) == "Left lower lobe opacity No pneumothorax. Heart size is normal"
    assert grounded_to_plain("  The lungs are clear. ") == "The lungs are clear."
    phrases = parse_grounded(GROUNDED)
    assert [p for p, _ in phrases] == ["Left lower lobe opacity", "No pneumothorax.", "Heart size is normal"]
    assert phrases[0][1] == [(0.105, 0.555, 0.405, 0.905), (0.605, 0.505, 0.705, 0.605)]
    assert phrases[1][1] is None
    truncated = "<obj>Small effusion<box><x10><y20><x3"  # cut off at the token limit
    assert grounded_to_plain(truncated) == "Small effusion"
    assert parse_grounded(truncated) == [("Small effusion", [])]


def test_decode_turns_grounded_tokens_into_plain_text(maira2_adapter) -> None:
    tok = maira2_adapter.tokenizer
    ids = tok(GROUNDED, add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("<obj>") in ids and tok.convert_tokens_to_ids("<x10>") in ids
    assert maira2_adapter.decode(ids + [tok.eos_token_id]) == \
        "Left lower lobe opacity No pneumothorax. Heart size is normal"
    assert maira2_adapter.decode_grounded(ids)[2][1] == [(0.305, 0.405, 0.705, 0.755)]
    assert torch.is_tensor(maira2_adapter.pixel_values({"frontal": _gradient()}))
