"""Concept vectors: difference of means at the steered layer's output, saved in the SAELens layout."""

from __future__ import annotations

import pytest
import torch
import yaml

from protocols.cli import main
from steering.adapters import HFCausalLMAdapter
from steering.concept_vectors import Concept, build_concept_vectors
from steering.errors import RadsteerError
from steering.sae_loaders import load_feature_bank, save_saelens
from tests.helpers_steering import write_tiny_study

POS = ["there is a small left pleural effusion .", "large right pleural effusion", "bilateral pleural effusion ."]
NEG = ["lungs clear .", "heart size normal", "no pneumothorax .", "the lungs are clear and heart size normal ."]
CONCEPTS = [Concept("effusion", POS, NEG, "pleural effusion", ("pleural_effusion",)),
            Concept("pacer", ["pacemaker in place .", "left pacemaker"], NEG, "", ("pacemaker",))]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    write_tiny_study(root, n_cases=2)
    return HFCausalLMAdapter.from_pretrained(root / "model", dtype="float32", device="cpu")


def _reference(adapter, sentences, layer):
    """Per-sentence means from `output_hidden_states`, one sentence at a time (no padding)."""
    out = []
    for s in sentences:
        ids = adapter.tokenizer(s, return_tensors="pt")["input_ids"]
        hs = adapter.model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0]
        out.append(hs[1:].mean(0) if hs.shape[0] > 1 else hs.mean(0))
    return torch.stack(out)


@torch.no_grad()
def test_raw_vector_is_the_difference_of_means_at_the_layer_output(adapter) -> None:
    bank = build_concept_vectors(adapter, CONCEPTS, 1, scale="raw", batch_size=3)
    expected = _reference(adapter, POS, 1).mean(0) - _reference(adapter, NEG, 1).mean(0)
    torch.testing.assert_close(bank.vectors(["effusion"])[0], expected, atol=1e-4, rtol=1e-4)
    assert bank.source == "concept" and bank.layer == 1 and bank.ids == ["effusion", "pacer"]
    assert bank.provenance["layer_module"] == "model.layers.1"


def test_batching_and_padding_do_not_change_the_vectors(adapter) -> None:
    one = build_concept_vectors(adapter, CONCEPTS, 2, batch_size=1)
    many = build_concept_vectors(adapter, CONCEPTS, 2, batch_size=7)
    torch.testing.assert_close(one.decoder, many.decoder, atol=1e-5, rtol=1e-4)


def test_median_norm_scale_gives_every_vector_the_typical_token_norm(adapter) -> None:
    bank = build_concept_vectors(adapter, CONCEPTS, 1)
    typical = bank.provenance["median_token_norm"]
    torch.testing.assert_close(bank.norms(), torch.full((2,), typical), rtol=1e-5, atol=1e-5)
    raw = build_concept_vectors(adapter, CONCEPTS, 1, scale="raw")
    cos = torch.nn.functional.cosine_similarity(bank.decoder, raw.decoder)
    torch.testing.assert_close(cos, torch.ones(2), rtol=1e-5, atol=1e-5)


def test_positive_sentences_project_higher_than_negative_ones(adapter) -> None:
    bank = build_concept_vectors(adapter, CONCEPTS, 1)
    v = bank.vectors(["effusion"], unit_norm=True)[0]
    pos, neg = _reference(adapter, POS, 1) @ v, _reference(adapter, NEG, 1) @ v
    assert pos.mean() > neg.mean()


def test_saelens_round_trip_keeps_ids_descriptions_targets_and_provenance(adapter, tmp_path) -> None:
    bank = build_concept_vectors(adapter, CONCEPTS, 1)
    save_saelens(bank, tmp_path / "v", hook_name="model.layers.1")
    back = load_feature_bank(tmp_path / "v")
    torch.testing.assert_close(back.decoder, bank.decoder)
    assert back.ids == bank.ids and back.source == "concept" and back.layer == 1
    assert back.descriptions["effusion"] == "pleural effusion" and back.descriptions["pacer"] == "pacer"
    assert back.target_concepts == {"effusion": ["pleural_effusion"], "pacer": ["pacemaker"]}
    prov = back.provenance
    assert prov["model"] == adapter.name and prov["method"] == "difference_of_means"
    assert len(prov["sentences"]["effusion"]["positive"]) == 3 and prov["fingerprint"]


def test_bad_concepts_are_refused(adapter) -> None:
    with pytest.raises(RadsteerError, match="same mean activation"):
        build_concept_vectors(adapter, [Concept("x", NEG, NEG)], 1)
    with pytest.raises(RadsteerError, match="repeat"):
        build_concept_vectors(adapter, [CONCEPTS[0], CONCEPTS[0]], 1)
    with pytest.raises(RadsteerError, match="layer 9 does not exist"):
        build_concept_vectors(adapter, CONCEPTS, 9)


def _concept_protocol(tmp_path):
    path = write_tiny_study(tmp_path, n_cases=2)
    data = yaml.safe_load(path.read_text())
    data["features"] = {
        "source": "concept", "path": "vectors",
        "items": [{"id": "effusion", "targets": ["pleural_effusion"]}, {"id": "pacer", "targets": ["pacemaker"]}],
        "concepts": [{"id": c.id, "positive": list(c.positive), "negative": list(c.negative)} for c in CONCEPTS],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_vectors_build_command_skips_current_rebuilds_stale(tmp_path, capsys) -> None:
    path = _concept_protocol(tmp_path)
    assert main(["validate", str(path)]) == 0
    assert "concept vectors are missing" in capsys.readouterr().out
    assert main(["vectors", "build", str(path)]) == 0
    assert "2 concept vectors (effusion, pacer) at layer 1" in capsys.readouterr().out
    weights = tmp_path / "vectors" / "sae_weights.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert main(["vectors", "build", str(path)]) == 0
    assert "up to date" in capsys.readouterr().out and weights.stat().st_mtime_ns == stamp
    assert main(["validate", str(path)]) == 0
    assert "features: 2 (concept: 2 vectors × 32)" in capsys.readouterr().out
    # new example sentences make the stored vectors stale: loading them is refused (mine, activations) ...
    path.write_text(path.read_text().replace("left pacemaker", "right pacemaker"))
    from protocols.study import Study
    from steering.errors import RadsteerError

    with pytest.raises(RadsteerError, match=r"features\.path.*--force"):
        Study.from_protocol(path).load_bank()
    assert main(["vectors", "build", str(path)]) == 0
    assert weights.stat().st_mtime_ns != stamp
    # ... and the sweep step (`radsteer sweep` exactly as `radsteer run`) rebuilds stale vectors first
    stamp = weights.stat().st_mtime_ns
    path.write_text(path.read_text().replace("right pacemaker", "left pacemaker"))
    assert main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs"), "--limit", "1"]) == 0
    assert "building concept vectors" in capsys.readouterr().out and weights.stat().st_mtime_ns != stamp


def test_unknown_concept_item_names_its_line(tmp_path, capsys) -> None:
    path = _concept_protocol(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["features"]["items"][1]["id"] = "pacr"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["vectors", "build", str(path)]) == 2
    err = capsys.readouterr().err
    assert "features.items[1].id: unknown feature id 'pacr'" in err and f"{path}:" in err
