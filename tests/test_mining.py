"""Mining feature contexts: planted answers, streaming = brute force, resume = uninterrupted."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from steering.errors import RadsteerError
from steering.mining import FeatureMiner, MiningSettings, read_corpus, uniform_keys
from steering.store import StudyStore
from tests.helpers_mining import (
    LAYER,
    PLANTED,
    layer_output,
    planted_setup,
    random_bank,
    random_docs,
    tiny_adapter,
    write_corpus,
)


class Interrupt(Exception):
    pass


def contexts(store: StudyStore, kind: str | None = None):
    df = store.dataframe("feature_contexts")
    return df if kind is None else df[df.kind == kind]


def test_planted_feature_top_contexts_are_exactly_the_planted_tokens(tmp_path) -> None:
    p = planted_setup(tmp_path)
    miner = FeatureMiner(p.adapter, p.bank, LAYER, settings=MiningSettings(top_k=5, window=2), batch_size=4)
    with StudyStore.open(tmp_path / "run") as store:
        miner.run(store, p.corpus, progress=False)
        top, zeros = contexts(store, "top"), contexts(store, "zero")
        stats = {r["feature_id"]: r for r in store.rows("feature_stats")}
    for j, word in enumerate(PLANTED):
        fid = f"f{j}"
        rows = top[top.feature_id == fid]
        # Only the planted tokens fire, so the top list holds exactly them (fewer than top_k).
        assert {(r.doc_id, r.token_index) for r in rows.itertuples()} == p.places[fid]
        for r in rows.itertuples():
            assert r.tokens[r.center].strip() == word and r.activations[r.center] == pytest.approx(r.activation)
            assert r.activation > 0 and len(r.tokens) == len(r.activations) <= 5
        assert list(rows.sort_values("rank").activation) == sorted(rows.activation, reverse=True)
        assert stats[fid]["n_tokens"] == p.n_tokens
        assert stats[fid]["frequency"] == pytest.approx(len(p.places[fid]) / p.n_tokens)
        assert stats[fid]["max_activation"] == pytest.approx(float(rows.activation.max()))
        # The non-activating sample never includes a planted place.
        zero = zeros[zeros.feature_id == fid]
        assert len(zero) == 5 and (zero.activation == 0).all()
        assert not {(r.doc_id, r.token_index) for r in zero.itertuples()} & p.places[fid]


def _brute_force_topk(miner: FeatureMiner, corpus, k: int):
    """Every mined token's activations in one matrix, then one top-k over the whole corpus."""
    batches = [miner.activations(b) for b in miner.plan(read_corpus(corpus))]
    acts = torch.cat([b.acts for b in batches])
    doc = torch.cat([b.doc for b in batches])
    pos = torch.cat([b.pos for b in batches])
    scores = torch.where(acts > 0, acts, torch.tensor(-math.inf))
    return acts, doc, pos, scores.topk(min(k, len(acts)), dim=0)


@pytest.mark.parametrize("encoder", [True, False], ids=["sae", "concept"])
def test_streaming_topk_equals_brute_force(tmp_path, encoder) -> None:
    adapter = tiny_adapter()
    bank = random_bank(adapter.hidden_size, 24, seed=3, encoder=encoder)
    corpus = tmp_path / "c.jsonl"
    names = write_corpus(corpus, random_docs(40, seed=1))
    k = 6
    miner = FeatureMiner(adapter, bank, LAYER, settings=MiningSettings(top_k=k, window=3), batch_size=3)
    with StudyStore.open(tmp_path / "run") as store:
        miner.run(store, corpus, progress=False)
        top = contexts(store, "top")
        stats = {r["feature_id"]: r for r in store.rows("feature_stats")}
    acts, doc, pos, (values, index) = _brute_force_topk(miner, corpus, k)
    lookup = {(names[int(d)], int(p)): i for i, (d, p) in enumerate(zip(doc, pos))}
    for j, fid in enumerate(bank.ids):
        rows = top[top.feature_id == fid].sort_values("rank")
        expected = values[:, j][values[:, j] > -math.inf].tolist()
        assert rows.activation.tolist() == pytest.approx(expected, abs=0, rel=0)
        # Every stored place really has the stored activation (ties may swap equal places).
        for r in rows.itertuples():
            assert float(acts[lookup[(r.doc_id, r.token_index)], j]) == r.activation
        if expected and len(set(expected)) == len(expected) and int((acts[:, j] == expected[-1]).sum()) == 1:
            got = {(r.doc_id, r.token_index) for r in rows.itertuples()}
            assert got == {(names[int(doc[i])], int(pos[i])) for i in index[: len(expected), j]}
        assert stats[fid]["frequency"] == pytest.approx(float((acts[:, j] > 0).float().mean()))
        assert stats[fid]["max_activation"] == pytest.approx(float(acts[:, j].max().clamp(min=0)))


def test_padded_batches_read_the_same_activations_as_single_documents(tmp_path) -> None:
    adapter = tiny_adapter()
    bank = random_bank(adapter.hidden_size, 8, seed=2)
    corpus = tmp_path / "c.jsonl"
    docs = random_docs(9, seed=4)
    write_corpus(corpus, docs)
    miner = FeatureMiner(adapter, bank, LAYER, batch_size=4)
    for batch in miner.plan(read_corpus(corpus)):
        got = miner.activations(batch)
        start = 0
        for doc, ids in batch:
            single = bank.encode(layer_output(adapter, ids)[1:])  # position 0 is never mined
            n = len(ids) - 1
            assert torch.equal(got.doc[start : start + n], torch.full((n,), doc.ordinal))
            torch.testing.assert_close(got.acts[start : start + n], single, atol=1e-5, rtol=1e-4)
            start += n
        assert start == got.acts.shape[0]


def test_resumed_run_equals_an_uninterrupted_one(tmp_path) -> None:
    adapter = tiny_adapter()
    bank = random_bank(adapter.hidden_size, 16, seed=5)
    corpus = tmp_path / "c.jsonl"
    write_corpus(corpus, random_docs(30, seed=2))
    settings = MiningSettings(top_k=4, n_quantile=3, n_zero=2, window=2)

    def miner() -> FeatureMiner:
        return FeatureMiner(adapter, bank, LAYER, settings=settings, batch_size=3, checkpoint_every=2)

    with StudyStore.open(tmp_path / "a") as a:
        full = miner().run(a, corpus, progress=False)
        expected_ctx, expected_stats = contexts(a), a.dataframe("feature_stats")

    def stop_after_5(n: int) -> None:
        if n == 5:
            raise Interrupt

    with StudyStore.open(tmp_path / "b") as b:
        with pytest.raises(Interrupt):
            miner().run(b, corpus, progress=False, on_batch=stop_after_5)
        assert b.count("mining_progress") == 4 * 3  # the checkpoint after batch 4; batch 5 is lost
        assert b.count("feature_contexts") == 0
        resumed = miner().run(b, corpus, progress=False)
        assert resumed.docs_already_mined == 12 and resumed.docs_mined == 30 - 12
        assert b.count("mining_progress") == 30
        got_ctx, got_stats = contexts(b), b.dataframe("feature_stats")
        again = miner().run(b, corpus, progress=False)  # a finished run mines nothing more
        assert again.docs_mined == 0 and contexts(b).equals(got_ctx)
    assert full.docs_mined == 30 and full.docs_already_mined == 0
    key = ["feature_id", "kind", "rank"]
    assert got_ctx.sort_values(key).reset_index(drop=True).equals(expected_ctx.sort_values(key).reset_index(drop=True))
    assert got_stats.sort_values("feature_id").reset_index(drop=True).equals(
        expected_stats.sort_values("feature_id").reset_index(drop=True))


def test_samples_and_quantiles(tmp_path) -> None:
    adapter = tiny_adapter()
    bank = random_bank(adapter.hidden_size, 6, seed=7)
    corpus = tmp_path / "c.jsonl"
    write_corpus(corpus, random_docs(40, seed=3))
    settings = MiningSettings(top_k=3, n_quantile=8, n_zero=4)
    miner = FeatureMiner(adapter, bank, LAYER, settings=settings, batch_size=5)
    with StudyStore.open(tmp_path / "run") as store:
        miner.run(store, corpus, progress=False)
        ctx = contexts(store)
        stats = {r["feature_id"]: r for r in store.rows("feature_stats")}
    acts, *_ = _brute_force_topk(miner, corpus, 1)
    for j, fid in enumerate(bank.ids):
        active = acts[:, j][acts[:, j] > 0].numpy()
        sample = ctx[(ctx.feature_id == fid) & (ctx.kind == "quantile")].sort_values("rank")
        zero = ctx[(ctx.feature_id == fid) & (ctx.kind == "zero")]
        assert len(sample) == min(8, len(active)) and (sample.activation > 0).all()
        assert list(sample.activation) == sorted(sample.activation, reverse=True)
        assert len(zero) == 4 and (zero.activation == 0).all()
        q = stats[fid]["quantiles"]
        assert q["n_active"] == len(active)
        for level, name in ((0.25, "p25"), (0.5, "p50"), (0.9, "p90")):
            exact = float(np.quantile(active, level))
            step = 10 ** ((settings.log10_range[1] - settings.log10_range[0]) / settings.n_bins)
            assert exact / step <= q[name] <= exact * step  # within one log-spaced bin


def test_uniform_keys_are_reproducible_and_spread() -> None:
    doc = torch.arange(200).repeat_interleave(50)
    pos = torch.arange(50).repeat(200)
    keys = uniform_keys(doc, pos, seed=0)
    assert torch.equal(keys, uniform_keys(doc, pos, seed=0))
    assert not torch.equal(keys, uniform_keys(doc, pos, seed=1))
    assert 0 <= float(keys.min()) and float(keys.max()) < 1
    hist = torch.histc(keys, bins=10, min=0, max=1)
    assert float(hist.min()) > 0.8 * len(keys) / 10  # roughly uniform


@pytest.mark.parametrize(("line", "message"), [
    ("not json", ":2: not valid JSON"),
    (json.dumps({"text": "x"}), ':2: missing field "id"'),
    (json.dumps({"id": "a", "text": 3}), ':2: field "text" must be a string'),
    (json.dumps({"id": "d0", "text": "x"}), ":2: duplicate id 'd0'"),
])
def test_corpus_errors_name_the_line(tmp_path, line, message) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": "d0", "text": "no effusion"}) + "\n" + line + "\n")
    with pytest.raises(RadsteerError, match=message.replace("(", r"\(")):
        list(read_corpus(path))


def test_width_mismatch_and_bad_settings_are_clear() -> None:
    adapter = tiny_adapter()
    with pytest.raises(RadsteerError, match="SAE width does not match"):
        FeatureMiner(adapter, random_bank(adapter.hidden_size + 1, 4), LAYER)
    with pytest.raises(RadsteerError, match="top_k must be at least 1"):
        MiningSettings(top_k=0)
