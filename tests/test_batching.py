"""Batch sizes: `auto` calibrates on the sweep's own first batches (8, 16, 32, 64 rows), keeps the
fastest, survives running out of accelerator memory, and never changes what is generated."""

from __future__ import annotations

import pytest
import torch

from steering.adapters import HFCausalLMAdapter
from steering.batching import BatchSizer, padding_fraction
from steering.engine import GenerationSettings, SteeringEngine, SteeringSpec, plan_rows
from steering.errors import RadsteerError
from steering.feature_bank import FeatureBank
from steering.store import StudyStore
from tests.tiny_models import WORDS, make_tiny_llama

CASES = {f"c{i}": {"prompt": " ".join(WORDS[i : i + 2 + i % 6])} for i in range(12)}
FEATURES = ["f0", "f1", "f2"]


@pytest.fixture(scope="module")
def adapter():
    model, tok = make_tiny_llama(seed=3)
    return HFCausalLMAdapter(model, tok, name="tiny-llama")


@pytest.fixture(scope="module")
def bank():
    g = torch.Generator().manual_seed(0)
    return FeatureBank(decoder=torch.randn(3, 32, generator=g), ids=FEATURES)


def _engine(adapter, bank, batch_size):
    return SteeringEngine(adapter, bank, spec=SteeringSpec(layer=1),
                          settings=GenerationSettings(max_new_tokens=6), batch_size=batch_size)


def test_sizer_tries_each_candidate_once_then_keeps_the_fastest() -> None:
    sizer = BatchSizer(None)
    speeds = {8: 100.0, 16: 180.0, 32: 150.0, 64: 90.0}
    seen = []
    for _ in range(6):
        size = sizer.next_size()
        seen.append(size)
        sizer.record(size, size, int(speeds.get(size, 0) * 2), 2.0)
    assert seen == [8, 16, 32, 64, 16, 16]
    assert sizer.chosen == 16 and sizer.describe()["tokens_per_s"] == {"8": 100.0, "16": 180.0, "32": 150.0,
                                                                       "64": 90.0}


def test_a_short_last_batch_is_not_a_measurement() -> None:
    sizer = BatchSizer(None)
    sizer.record(8, 8, 800, 1.0)  # 800 tokens/s at 8
    sizer.record(16, 5, 5000, 1.0)  # only 5 rows were left: says nothing about 16
    assert sizer.measured == {8: 800.0} and sizer.chosen == 8


def test_out_of_memory_drops_that_size_and_everything_larger() -> None:
    sizer = BatchSizer(None)
    sizer.record(8, 8, 80, 1.0)
    sizer.record(16, 16, 320, 1.0)
    assert sizer.next_size() == 32
    assert sizer.out_of_memory(32) == 16
    assert sizer.too_big == {32, 64} and sizer.next_size() == 16


def test_fixed_size_is_the_protocols_word() -> None:
    sizer = BatchSizer(5)
    assert [sizer.next_size() for _ in range(3)] == [5, 5, 5]
    with pytest.raises(ValueError):
        BatchSizer(0)


def test_padding_fraction_by_hand() -> None:
    # batch 1: lengths 3, 5 → width 5, 2 pad of 10; batch 2: 4, 4, 4 → 0 of 12
    assert padding_fraction([[3, 5], [4, 4, 4]]) == pytest.approx(2 / 22)
    assert padding_fraction([]) == 0.0


def test_engine_refuses_a_nonsense_batch_size(adapter, bank) -> None:
    for bad in (0, -3, "big", 2.5):
        with pytest.raises(RadsteerError, match="batch size"):
            _engine(adapter, bank, bad)


def test_auto_sweep_generates_what_one_row_at_a_time_does(adapter, bank, tmp_path) -> None:
    rows = plan_rows(list(CASES), FEATURES, [-1.0, 1.0])  # 12 × (1 + 6) = 84 rows
    engine = _engine(adapter, bank, "auto")
    with StudyStore.open(tmp_path) as store:
        store.add_cases([{"case_id": c, "inputs": v, "split": "test"} for c, v in CASES.items()])
        report = engine.sweep(store, CASES, rows, progress=False)
        stored = {(r.case_id, r.feature_id, r.alpha): r.text for r in store.dataframe("generations").itertuples()}
    # 84 rows = 8 + 16 + 32 + 28 (the last batch is short, so 64 was never measured)
    assert [len(b) for b in engine.batch_lengths] == [8, 16, 32, 28]
    assert report.generated == 84 and report.batches == 4
    assert set(report.batching["tokens_per_s"]) == {"8", "16", "32"}
    assert report.batching["chosen"] in (8, 16, 32) and report.batching["mode"] == "auto"
    assert 0 <= report.padding_fraction < 1 and report.tokens_per_s > 0
    assert "tokens/s" in report.summary() and "padding" in report.summary()
    single = {r.row.key(): r.text for r in _engine(adapter, bank, 1).generate(CASES, rows)}
    assert stored == single


def test_auto_sweep_recovers_from_out_of_memory(adapter, bank, monkeypatch) -> None:
    engine = _engine(adapter, bank, "auto")
    real = engine._generate_batch
    sizes = []

    def limited(cases, batch, extras):
        sizes.append(len(batch))
        if len(batch) > 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated: more than 16 rows)")
        return real(cases, batch, extras)

    monkeypatch.setattr(engine, "_generate_batch", limited)
    rows = plan_rows(list(CASES), FEATURES, [-1.0, 1.0])
    results = engine.generate(CASES, rows)
    assert sorted(r.row.key() for r in results) == sorted(r.key() for r in rows)  # every row exactly once
    assert sizes[:3] == [8, 16, 32] and max(sizes[3:]) <= 16
    assert engine.sizer.too_big == {32, 64}


def test_fixed_size_out_of_memory_is_not_swallowed(adapter, bank, monkeypatch) -> None:
    engine = _engine(adapter, bank, 4)

    def oom(*_a):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(engine, "_generate_batch", oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        engine.generate(CASES, plan_rows(["c0"], ["f0"], [1.0]))
