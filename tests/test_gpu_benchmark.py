"""benchmarks/gpu_maira2.py: the MAIRA-2-scale GPU benchmark refuses a CPU-only machine clearly, and its
code path (random MAIRA-2-shaped model → radsteer engine → hook) runs end to end at tiny shapes."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_maira2.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_maira2_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the refusal path does not apply")
def test_refuses_without_a_gpu(monkeypatch, capsys):
    bench = _load()
    monkeypatch.setattr(sys, "argv", ["gpu_maira2.py"])
    assert bench.main() == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_tiny_shapes_run_the_engine_path(monkeypatch, capsys):
    bench = _load()
    monkeypatch.setattr(sys, "argv", ["gpu_maira2.py", "--shapes", "tiny", "--device", "cpu", "--rows", "4",
                                      "--cases", "2", "--new-tokens", "3", "--repeats", "1"])
    assert bench.main() == 0
    out = capsys.readouterr().out
    # prompt = BOS + 160 text tokens + 2 images × (56/14)² image tokens; every row generates exactly 3 tokens
    assert "prompt 193 tokens" in out
    last = out.strip().splitlines()[-1]
    m = re.fullmatch(r"steer_overhead_gpu=([\d.]+) decode_tokens_per_s=([\d.]+) prefill_s=([\d.]+) "
                     r"peak_gib=nan max_batch=n/a", last)
    assert m, last
    assert float(m.group(1)) > 0 and float(m.group(2)) > 0


def test_maira2_shapes_match_the_official_config():
    bench = _load()
    cfg = bench.config_from_dict(bench.MAIRA2_SHAPES)
    assert cfg.tokens_per_image() == 1369
    assert (cfg.text_config.num_hidden_layers, cfg.text_config.hidden_size) == (32, 4096)
    assert cfg.image_token_index == 32204 and cfg.projector_n_layers == 4
