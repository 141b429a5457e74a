"""Prompt styles of text-only models, and `dtype: auto` on the CPU (bf16 only where it is native)."""

from __future__ import annotations

import json

import pytest
import torch

from steering import adapters as adapters_mod
from steering.adapters import HFCausalLMAdapter, resolve_dtype
from steering.cpu import cpu_bf16_supported, cpu_info
from steering.engine import GenerationSettings, SteeringEngine, SteeringSpec, plan_rows
from steering.errors import RadsteerError
from steering.few_shot import EXAMPLES, STOP, few_shot_prompt
from tests.tiny_models import make_tiny_llama

CASE = {"indication": "Cough.", "technique": "PA chest.", "comparison": "None.", "prior_report": "Mild cardiomegaly."}


def test_few_shot_prompt_ends_in_the_cases_findings_header() -> None:
    text = few_shot_prompt(CASE)
    assert text.endswith("INDICATION: Cough.\nCOMPARISON: None.\nPRIOR REPORT: Mild cardiomegaly.\n"
                         "TECHNIQUE: PA chest.\nFINDINGS:")  # the chest technique right before the cue
    assert text.count("FINDINGS:") == len(EXAMPLES) + 1
    for example in EXAMPLES:  # every example ends at the blank line the stop sequence catches
        assert f"FINDINGS: {example['findings']}\n\n" in text
    assert "\n" in STOP
    last = few_shot_prompt({"indication": "x", "comparison": "None."}).split("\n\n")[-1]
    assert last == "INDICATION: x\nCOMPARISON: None.\nFINDINGS:"  # optional sections left out, required ones kept
    assert few_shot_prompt({}).split("\n\n")[-1] == "INDICATION: N/A\nCOMPARISON: N/A\nFINDINGS:"


def test_prompt_styles() -> None:
    model, tok = make_tiny_llama(seed=1)
    tok.chat_template = "{% for m in messages %}<s> {{ m['content'] }} </s>{% endfor %}"
    adapter = HFCausalLMAdapter(model, tok, name="tiny")
    chat = adapter.prompt_ids(CASE)
    adapter.prompt_style = "completion"
    completion = adapter.prompt_ids(CASE)
    adapter.prompt_style = "few_shot"
    few = adapter.prompt_ids(CASE)
    assert chat != completion and len(few) > len(completion)
    assert tok.decode(few).endswith(tok.decode(tok(few_shot_prompt(CASE))["input_ids"]))
    adapter.prompt_style = "few_shot"  # a case's own prompt still wins
    assert adapter.prompt_ids({"prompt": "lungs clear"}) == adapter.prompt_ids({"prompt": "lungs clear", **CASE})
    tok.chat_template = None
    adapter.prompt_style = "chat"
    with pytest.raises(RadsteerError, match="no chat template"):
        adapter.prompt_ids(CASE)
    adapter.prompt_style = "fancy"
    with pytest.raises(RadsteerError, match="unknown prompt style"):
        adapter.prompt_ids(CASE)


def test_dtype_auto_on_the_cpu_follows_bf16_support(monkeypatch) -> None:
    monkeypatch.setattr("steering.cpu.cpu_bf16_supported", lambda: True)
    assert resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr("steering.cpu.cpu_bf16_supported", lambda: False)
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("float32", "cpu") == torch.float32  # asked for: always honoured
    assert resolve_dtype("auto", "cuda:0") == torch.bfloat16
    info = cpu_info()
    assert info["bf16_matmul"] == cpu_bf16_supported() and info["capability"]
    assert adapters_mod.resolve_dtype is resolve_dtype


def test_bf16_model_steers_and_its_dtype_decides_the_settings_hash(tmp_path) -> None:
    make_tiny_llama(tmp_path / "m", seed=2)
    a32 = HFCausalLMAdapter.from_pretrained(tmp_path / "m", dtype="float32", device="cpu")
    a16 = HFCausalLMAdapter.from_pretrained(tmp_path / "m", dtype="bfloat16", device="cpu")
    assert a16.dtype == torch.bfloat16
    from steering.feature_bank import FeatureBank

    bank = FeatureBank(decoder=torch.randn(1, 32, generator=torch.Generator().manual_seed(0)), ids=["f0"])
    engines = [SteeringEngine(a, bank, spec=SteeringSpec(layer=1), settings=GenerationSettings(max_new_tokens=6))
               for a in (a32, a16)]
    assert engines[0].settings_hash() != engines[1].settings_hash()
    assert "dtype" not in engines[0].describe() and engines[1].describe()["dtype"] == "bfloat16"
    res = engines[1].generate({"c": {"prompt": "no pleural effusion ."}}, plan_rows(["c"], ["f0"], [4.0]))
    assert len(res) == 2 and all(r.n_tokens > 0 for r in res)
    json.dumps(engines[1].describe())  # recordable in the manifest
