"""The steering hook: exactness at α = 0, batching, KV-cache decode steps, model families."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from steering.hooks import SteeringHook, find_decoder_layers, prompt_steer_mask
from tests.tiny_models import make_tiny_llama, make_tiny_llava


@pytest.fixture(scope="module")
def llama():
    return make_tiny_llama(seed=1)


def _greedy(model, ids, mask, n, **kw):
    cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=2)
    return model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg, **kw)


def _ids(tok, text):
    return torch.tensor([tok(text)["input_ids"]])


def test_alpha_zero_is_exactly_no_hook(llama) -> None:
    model, tok = llama
    ids = _ids(tok, "no pleural effusion . heart size normal")
    mask = torch.ones_like(ids)
    plain = _greedy(model, ids, mask, 12)
    layers, _ = find_decoder_layers(model)
    with SteeringHook(layers[1], torch.randn(1, 32), torch.zeros(1)) as hook:
        hooked = _greedy(model, ids, mask, 12)
    assert hook.calls == 12 and hook.steered_positions > 0  # it ran, adding exactly zero
    assert torch.equal(plain, hooked)


def test_hook_always_removes_itself(llama) -> None:
    model, tok = llama
    layers, _ = find_decoder_layers(model)
    with pytest.raises(RuntimeError, match="boom"):
        with SteeringHook(layers[0], torch.randn(1, 32), torch.ones(1)):
            raise RuntimeError("boom")
    assert not layers[0]._forward_hooks


@pytest.mark.parametrize(
    "policy, expected",
    [("all", lambda t, n: t + n - 1), ("generated", lambda t, n: n - 1), ("prompt", lambda t, n: t)],
)
def test_every_decode_step_is_steered_under_kv_cache(llama, policy, expected) -> None:
    model, tok = llama
    ids = _ids(tok, "there is a small left pleural effusion")
    t, n = ids.shape[1], 9
    mask = torch.ones_like(ids)
    layers, _ = find_decoder_layers(model)
    pm = prompt_steer_mask(ids, mask, policy)
    with SteeringHook(layers[2], torch.randn(1, 32), torch.ones(1), prompt_mask=pm, policy=policy) as hook:
        _greedy(model, ids, mask, n)
    assert hook.calls == n  # one prompt pass + n - 1 cached decode steps of length 1
    assert hook.steered_positions == expected(t, n)


def test_excluded_token_ids_are_not_steered(llama) -> None:
    model, tok = llama
    ids = _ids(tok, "<s> no pneumothorax")
    mask = torch.ones_like(ids)
    layers, _ = find_decoder_layers(model)
    pm = prompt_steer_mask(ids, mask, "prompt", exclude_ids=[tok.bos_token_id])
    with SteeringHook(layers[0], torch.randn(1, 32), torch.ones(1), prompt_mask=pm, policy="prompt") as hook:
        _greedy(model, ids, mask, 3)
    assert hook.steered_positions == ids.shape[1] - 1


def test_padding_is_never_steered(llama) -> None:
    model, tok = llama
    ids = torch.tensor([[0, 0, 5, 6, 7], [5, 6, 7, 8, 9]])
    mask = (ids != 0).long()
    pm = prompt_steer_mask(ids, mask, "all")
    assert pm.tolist() == [[False, False, True, True, True], [True] * 5]


def test_steering_changes_the_chosen_layer_only(llama) -> None:
    model, tok = llama
    ids = _ids(tok, "heart size normal")
    layers, _ = find_decoder_layers(model)
    seen: dict[str, torch.Tensor] = {}

    def grab(name):  # what the next layer receives = this layer's (steered) output
        return lambda _m, args, kwargs: seen.__setitem__(name, (args[0] if args else kwargs["hidden_states"]).clone())

    handles = [layers[i].register_forward_pre_hook(grab(f"in{i}"), with_kwargs=True) for i in (1, 2)]
    v = torch.randn(1, 32)
    with torch.no_grad():
        model(ids)
        base = dict(seen)
        with SteeringHook(layers[1], v, torch.tensor([2.0])):
            out = model(ids).logits
    for h in handles:
        h.remove()
    assert torch.equal(base["in1"], seen["in1"])  # layer 0's output is untouched
    torch.testing.assert_close(seen["in2"], base["in2"] + 2.0 * v)  # layer 1's output moved by α·v
    assert not torch.allclose(out, model(ids).logits)


def test_tuple_outputs_are_steered() -> None:
    class TupleLayer(torch.nn.Module):
        def forward(self, x):
            return (x * 1.0, "cache")

    layer = TupleLayer()
    x = torch.zeros(2, 3, 4)
    v = torch.ones(2, 4)
    with SteeringHook(layer, v, torch.tensor([1.0, -2.0])):
        out, extra = layer(x)
    assert extra == "cache"
    assert torch.equal(out[0], torch.ones(3, 4)) and torch.equal(out[1], -2 * torch.ones(3, 4))


def test_llava_language_model_is_steered() -> None:
    model, tok = make_tiny_llava(seed=2)
    layers, path = find_decoder_layers(model)
    assert path == "model.language_model.layers"
    ids = _ids(tok, "no pleural effusion")
    with torch.no_grad():
        base = model(input_ids=ids).logits
        with SteeringHook(layers[1], torch.randn(1, 32), torch.zeros(1)):
            zero = model(input_ids=ids).logits
        with SteeringHook(layers[1], torch.randn(1, 32), torch.tensor([3.0])):
            steered = model(input_ids=ids).logits
    assert torch.equal(base, zero)
    assert not torch.allclose(base, steered)
