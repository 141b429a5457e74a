"""SAE loading and encoding: dictionary_learning ae.pt and SAELens folders, with clear errors."""

from __future__ import annotations

import warnings

import pytest
import torch

from steering.errors import RadsteerError
from steering.feature_bank import FeatureBank
from steering.sae_loaders import load_feature_bank, save_saelens


def _write_dl_sae(path, d=4, n=3):
    """A MatryoshkaBatchTopK-style state dict with hand-picked numbers."""
    state = {
        "W_enc": torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, -1.0, 0.0]])[:d, :n],
        "b_enc": torch.tensor([0.0, -0.5, 0.1])[:n],
        "W_dec": torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]])[:n, :d],
        "b_dec": torch.tensor([0.5, 0.0, 0.0, 0.0])[:d],
        "threshold": torch.tensor(0.6),
        "k": torch.tensor(2),
        "group_sizes": torch.tensor([2, 1]),
    }
    torch.save(state, path)
    return state


def test_dictionary_learning_sae_encodes_and_decodes_by_hand(tmp_path) -> None:
    _write_dl_sae(tmp_path / "ae.pt")
    bank = load_feature_bank(tmp_path / "ae.pt")
    assert bank.ids == ["f0", "f1", "f2"] and bank.d_model == 4 and bank.provenance["activation"] == "batchtopk"
    x = torch.tensor([[1.5, 1.0, 0.25, 1.0]])
    # x - b_dec = [1, 1, .25, 1]; @ W_enc = [1+0+0+1, 0+1+0-1, 2+0+.25+0] = [2, 0, 2.25]; + b_enc = [2, -.5, 2.35]
    # relu → [2, 0, 2.35]; global threshold 0.6 keeps both
    torch.testing.assert_close(bank.encode(x), torch.tensor([[2.0, 0.0, 2.35]]))
    # decode: 2·[1,0,0,0] + 2.35·[0,0,0,3] + b_dec = [2.5, 0, 0, 7.05]
    torch.testing.assert_close(bank.decode(torch.tensor([[2.0, 0.0, 2.35]])), torch.tensor([[2.5, 0.0, 0.0, 7.05]]))
    assert bank.index(1) == bank.index("1") == bank.index("f1") == 1
    assert bank.provenance["group_sizes"] == [2, 1]


def test_threshold_zeroes_weak_activations(tmp_path) -> None:
    _write_dl_sae(tmp_path / "ae.pt")
    bank = load_feature_bank(tmp_path / "ae.pt")
    x = torch.tensor([[0.5 + 0.3, 0.0, 0.0, 0.0]])  # pre-acts: [0.3, -0.5, 0.7] → 0.3 < 0.6 is dropped
    torch.testing.assert_close(bank.encode(x), torch.tensor([[0.0, 0.0, 0.7]]))


def test_vector_spaces_and_unit_norm(tmp_path) -> None:
    _write_dl_sae(tmp_path / "ae.pt")
    bank = load_feature_bank(tmp_path / "ae.pt", normalisation_factor=22.34)
    torch.testing.assert_close(bank.vectors(["f1"]), torch.tensor([[0.0, 2.0, 0.0, 0.0]]))
    torch.testing.assert_close(bank.vectors(["f1"], space="sae_input"), torch.tensor([[0.0, 44.68, 0.0, 0.0]]))
    torch.testing.assert_close(bank.vectors(["f2"], unit_norm=True), torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
    plain = load_feature_bank(tmp_path / "ae.pt")
    with pytest.raises(RadsteerError, match="normalisation factor"):
        plain.vectors(["f1"], space="sae_input")


def test_wrong_width_names_both_numbers(tmp_path) -> None:
    _write_dl_sae(tmp_path / "ae.pt")
    bank = load_feature_bank(tmp_path / "ae.pt")
    with pytest.raises(RadsteerError, match=r"d_in=4 but maira-2 has hidden size 4096"):
        bank.check_width(4096, "maira-2")


def test_truncated_file_is_reported_as_corrupt(tmp_path) -> None:
    _write_dl_sae(tmp_path / "ae.pt")
    data = (tmp_path / "ae.pt").read_bytes()
    (tmp_path / "bad.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RadsteerError, match=r"bad\.pt: it is corrupt or truncated"):
        load_feature_bank(tmp_path / "bad.pt")


def test_missing_keys_are_named(tmp_path) -> None:
    state = _write_dl_sae(tmp_path / "ae.pt")
    del state["W_dec"], state["b_dec"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(RadsteerError, match=r"lacks keys W_dec, b_dec"):
        load_feature_bank(tmp_path / "partial.pt")


def test_pickled_objects_are_refused(tmp_path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"W_enc": Evil()}))
    torch.save({"W_dec": torch.zeros(2, 2), "x": Evil()}, tmp_path / "evil_zip.pt")
    for name in ("evil.pt", "evil_zip.pt"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch's notices must not leak out
            with pytest.raises(RadsteerError) as info:  # weights_only refuses it
                load_feature_bank(tmp_path / name)
        msg = str(info.value)
        assert "contains pickled code objects" in msg and "refused for safety" in msg, msg
        assert "\n" not in msg and "weights_only" not in msg and "will likely succeed" not in msg
        assert "trust" not in msg.lower()


def test_missing_file_says_what_to_download(tmp_path) -> None:
    with pytest.raises(RadsteerError, match="microsoft/maira-2-sae"):
        load_feature_bank(tmp_path / "nope" / "ae.pt")


def test_saelens_round_trip_keeps_metadata(tmp_path) -> None:
    bank = FeatureBank(decoder=torch.randn(2, 8), ids=["pleural_effusion", "pneumothorax"], source="concept",
                       layer=5, descriptions={"pneumothorax": "air in the pleural space"},
                       target_concepts={"pneumothorax": ["pneumothorax"]})
    save_saelens(bank, tmp_path / "vec")
    back = load_feature_bank(tmp_path / "vec")
    assert back.ids == bank.ids and back.source == "concept" and back.layer == 5
    assert back.descriptions == bank.descriptions and back.target_concepts == bank.target_concepts
    torch.testing.assert_close(back.decoder, bank.decoder)


def test_saelens_truncated_weights(tmp_path) -> None:
    bank = FeatureBank(decoder=torch.randn(2, 8), ids=["a", "b"])
    save_saelens(bank, tmp_path / "vec")
    w = tmp_path / "vec" / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[:40])
    with pytest.raises(RadsteerError, match="corrupt or truncated"):
        load_feature_bank(tmp_path / "vec")
