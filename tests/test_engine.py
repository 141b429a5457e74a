"""The engine: batched rows equal one-row runs, seeded sampling, planning, sweeps with resume."""

from __future__ import annotations

import pytest
import torch

from steering.adapters import HFCausalLMAdapter
from steering.engine import GenerationSettings, PlannedRow, SteeringEngine, SteeringSpec, plan_rows
from steering.errors import RadsteerError
from steering.feature_bank import FeatureBank
from tests.tiny_models import make_tiny_llama

CASES = {
    "short": {"prompt": "no pleural effusion ."},
    "long": {"prompt": "heart size normal , lungs clear . there is a small left pleural effusion"},
    "mid": {"prompt": "there is new right lower lobe opacity"},
}


@pytest.fixture(scope="module")
def adapter():
    model, tok = make_tiny_llama(seed=3)
    return HFCausalLMAdapter(model, tok, name="tiny-llama")


@pytest.fixture(scope="module")
def bank():
    g = torch.Generator().manual_seed(0)
    return FeatureBank(decoder=torch.randn(3, 32, generator=g), ids=["f0", "f1", "f2"],
                       descriptions={"f0": "effusion"})


def _engine(adapter, bank, batch_size, **settings):
    return SteeringEngine(adapter, bank, spec=SteeringSpec(layer=1),
                          settings=GenerationSettings(max_new_tokens=10, **settings), batch_size=batch_size)


def test_plan_has_one_baseline_per_case_and_skips_alpha_zero() -> None:
    rows = plan_rows(["a", "b"], ["f0", "f1"], [-2.0, 0.0, 2.0])
    assert len(rows) == 2 * (1 + 2 * 2)
    assert [r for r in rows if r.is_baseline] == [PlannedRow("a", "", 0.0), PlannedRow("b", "", 0.0)]


def test_batched_rows_equal_one_row_runs(adapter, bank) -> None:
    rows = plan_rows(list(CASES), ["f0", "f2"], [-0.5, 0.5, 1.5])  # mixed α, mixed prompt lengths
    batched = _engine(adapter, bank, batch_size=7).generate(CASES, rows)
    single = _engine(adapter, bank, batch_size=1).generate(CASES, rows)
    by_key = {r.row.key(): r.token_ids for r in single}
    assert len(batched) == len(rows)
    for r in batched:
        assert r.token_ids == by_key[r.row.key()], r.row
    # and steering did something: some steered rows differ from their baseline
    base = {r.row.case_id: r.token_ids for r in batched if r.row.is_baseline}
    assert any(r.token_ids != base[r.row.case_id] for r in batched if not r.row.is_baseline)


def test_seeded_sampling_shares_randomness_across_batches(adapter, bank) -> None:
    rows = plan_rows(list(CASES), ["f1"], [0.5])
    a = _engine(adapter, bank, 6, do_sample=True, temperature=1.5, seed=7).generate(CASES, rows)
    b = _engine(adapter, bank, 1, do_sample=True, temperature=1.5, seed=7).generate(CASES, rows)
    c = _engine(adapter, bank, 6, do_sample=True, temperature=1.5, seed=8).generate(CASES, rows)
    key = lambda res: {r.row.key(): r.token_ids for r in res}  # noqa: E731
    assert key(a) == key(b)  # a row's draws do not depend on its batch neighbours
    assert key(a) != key(c)  # and the seed matters


def test_width_mismatch_names_both_numbers(adapter) -> None:
    wrong = FeatureBank(decoder=torch.zeros(2, 48), ids=["a", "b"], provenance={"path": "sae/ae.pt"})
    with pytest.raises(RadsteerError, match=r"d_in=48.*hidden size 32"):
        SteeringEngine(adapter, wrong, spec=SteeringSpec(layer=1))


def test_unknown_layer_is_a_clear_error(adapter, bank) -> None:
    with pytest.raises(RadsteerError, match="3 decoder layers"):
        SteeringEngine(adapter, bank, spec=SteeringSpec(layer=7))


def test_sweep_stores_each_row_once_and_resumes(adapter, bank, store) -> None:
    store.add_cases([{"case_id": c, "inputs": v, "split": "test"} for c, v in CASES.items()])
    engine = _engine(adapter, bank, batch_size=4)
    rows = plan_rows(list(CASES), ["f0", "f1"], [-1.0, 1.0])
    first = engine.sweep(store, CASES, rows[:7], progress=False)
    assert (first.generated, store.count("generations")) == (7, 7)
    second = engine.sweep(store, CASES, rows, progress=False)  # "resume" with the full plan
    assert second.already_stored == 7 and second.generated == len(rows) - 7
    assert store.count("generations") == len(rows)
    third = engine.sweep(store, CASES, rows, progress=False)
    assert third.generated == 0 and store.count("generations") == len(rows)
    df = store.dataframe("generations")
    assert set(zip(df.case_id, df.feature_id, df.alpha)) == {r.key() for r in rows}
    assert (df.settings_hash == engine.settings_hash()).all()


def test_settings_hash_follows_what_changes_text(adapter, bank) -> None:
    a = _engine(adapter, bank, 4).settings_hash()
    assert a == _engine(adapter, bank, 8).settings_hash()  # batch size does not change text
    b = SteeringEngine(adapter, bank, spec=SteeringSpec(layer=2)).settings_hash()
    c = SteeringEngine(adapter, bank, spec=SteeringSpec(layer=1, positions="generated")).settings_hash()
    assert len({a, b, c}) == 3


def test_stop_sequences_end_each_row_on_its_own_and_batched_equals_one_row(adapter, bank) -> None:
    rows = plan_rows(list(CASES), ["f0", "f2"], [-0.5, 1.5])
    free = {r.row.key(): r for r in _engine(adapter, bank, 7).generate(CASES, rows)}
    # A stop word that some rows write part-way and others never write.
    words = [w for r in free.values() for w in r.text.split()[1:-1]]
    stop = max(set(words), key=words.count)
    stop_s = f" {stop} "  # written part-way (not first, not last) by some rows, never by others
    hit = [k for k, r in free.items() if stop_s in r.text]
    assert 0 < len(hit) < len(free)
    batched = _engine(adapter, bank, 7, stop=(stop_s,)).generate(CASES, rows)
    single = {r.row.key(): r for r in _engine(adapter, bank, 1, stop=(stop_s,)).generate(CASES, rows)}
    for r in batched:
        one = single[r.row.key()]
        assert (r.token_ids, r.text, r.finish_reason) == (one.token_ids, one.text, one.finish_reason), r.row
        unstopped = free[r.row.key()]
        if stop_s in unstopped.text:  # the row ends where it first wrote the stop sequence
            assert r.finish_reason == "stop"
            assert r.text == unstopped.text[: unstopped.text.index(stop_s)].strip()
            assert r.token_ids == unstopped.token_ids[: len(r.token_ids)] and r.n_tokens < unstopped.n_tokens
        else:  # a row that never writes it is untouched by its neighbours' stopping
            assert (r.token_ids, r.text, r.finish_reason) == (unstopped.token_ids, unstopped.text,
                                                              unstopped.finish_reason)
    assert any(r.finish_reason == "stop" for r in batched)


def test_stop_and_no_repeat_change_the_settings_hash_only_when_set(adapter, bank) -> None:
    plain = _engine(adapter, bank, 4)
    assert "stop" not in plain.describe()["generation"]  # studies stored before stop sequences keep their hash
    assert "no_repeat_ngram_size" not in plain.describe()["generation"]
    stopped = _engine(adapter, bank, 4, stop=("\n\n",))
    assert stopped.describe()["generation"]["stop"] == ["\n\n"]
    norep = _engine(adapter, bank, 4, no_repeat_ngram_size=2)
    assert len({plain.settings_hash(), stopped.settings_hash(), norep.settings_hash()}) == 3


def test_no_repeat_ngram_is_per_row_and_batched_equals_one_row(adapter, bank) -> None:
    rows = plan_rows(list(CASES), ["f1"], [-1.0, 1.0])
    batched = _engine(adapter, bank, 5, no_repeat_ngram_size=2).generate(CASES, rows)
    single = {r.row.key(): r.token_ids for r in _engine(adapter, bank, 1, no_repeat_ngram_size=2).generate(CASES, rows)}
    for r in batched:
        assert r.token_ids == single[r.row.key()]
        pairs = list(zip(r.token_ids, r.token_ids[1:]))
        assert len(pairs) == len(set(pairs)), r.token_ids  # no bigram twice in a row's own text
