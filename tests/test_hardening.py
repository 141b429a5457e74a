"""Bad inputs refused in one line, exit 2, nothing created (issue 11, "Protocols and inputs")."""

from __future__ import annotations

import pytest
import yaml

from protocols.cli import main
from tests.helpers_steering import write_tiny_study


def _edit(path, **changes):
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_split_selecting_no_case_is_refused(tmp_path, capsys) -> None:
    path = _edit(write_tiny_study(tmp_path, n_cases=3), cases__split={"tune_fraction": 0.0, "use": "tune"})
    line = next(i + 1 for i, t in enumerate(path.read_text().splitlines()) if t.strip().startswith("use:"))
    for argv in (["validate", str(path)], ["sweep", str(path), "--runs-dir", str(tmp_path / "runs")],
                 ["run", str(path), "--runs-dir", str(tmp_path / "runs")]):
        assert main(argv) == 2
        err = _one_line_error(capsys)
        assert f"{path}:{line}: cases.split.use: no cases selected" in err, err
    assert not (tmp_path / "runs").exists()


def test_duplicate_yaml_keys_are_refused_with_their_line(tmp_path, capsys) -> None:
    path = write_tiny_study(tmp_path, n_cases=2)
    text = path.read_text()
    assert "layer: 1\n" in text
    path.write_text(text.replace("layer: 1\n", "layer: 0\nlayer: 1\n"))
    second = path.read_text().splitlines().index("layer: 1") + 1
    assert main(["validate", str(path)]) == 2
    err = _one_line_error(capsys)
    assert f"{path}:{second}: duplicate key 'layer' (first on line {second - 1})" in err
    # nested mappings and the items_file YAML too
    path.write_text(text.replace("  dtype: float32\n", "  dtype: float32\n  dtype: bfloat16\n"))
    assert main(["validate", str(path)]) == 2
    assert "duplicate key 'dtype'" in _one_line_error(capsys)
    items = tmp_path / "more.yaml"
    items.write_text("- id: f1\n  description: a\n  description: b\n")
    path.write_text(text)
    _edit(path, features__items_file="more.yaml")
    assert main(["validate", str(path)]) == 2
    assert f"{items}:3: duplicate key 'description'" in _one_line_error(capsys)


def test_label_refuses_unknown_fields_naming_them(tmp_path, capsys) -> None:
    import json

    row = {"id": 1, "baseline": "Lungs clear.", "steered": "Small left pleural effusion.",
           "target": "pleural_effusion", "direction": 1}
    src = tmp_path / "pairs.jsonl"
    src.write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": 2, "dirction": -1}) + "\n")
    assert main(["label", str(src), "-o", str(tmp_path / "out.jsonl")]) == 2
    err = _one_line_error(capsys)
    assert f"{src}:2:" in err and "unknown field 'dirction' (did you mean 'direction'?)" in err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("device", ["cuda:7", "mps", "tpu:0", "gpu"])
def test_a_device_this_machine_lacks_is_one_line(tmp_path, capsys, device) -> None:
    import torch

    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    path = _edit(write_tiny_study(tmp_path, n_cases=2), model__device=device)
    line = next(i + 1 for i, t in enumerate(path.read_text().splitlines()) if t.strip().startswith("device:"))
    for argv in (["validate", str(path)], ["sweep", str(path), "--runs-dir", str(tmp_path / "runs")]):
        assert main(argv) == 2
        err = _one_line_error(capsys)
        assert f"{path}:{line}: model.device:" in err and "cpu" in err, err
    assert not (tmp_path / "runs").exists()
    from steering.errors import RadsteerError
    from steering.models import load_adapter

    with pytest.raises(RadsteerError, match="it has cpu|this machine has cpu"):
        load_adapter("demo", device=device)


# ---- α too strong for the model's numbers; logits that stop being finite -------------------

def test_an_alpha_whose_push_is_not_finite_is_refused_at_its_line(tmp_path, capsys) -> None:
    for alpha, why in ((1e300, "not a finite float32"), (1e19, "the next layer norm squares it")):
        path = _edit(write_tiny_study(tmp_path, n_cases=2), alphas=[-1.0, alpha])
        lines = path.read_text().splitlines()
        line = lines.index("alphas:") + 3  # the second item
        for argv in (["validate", str(path)], ["sweep", str(path), "--runs-dir", str(tmp_path / "runs")]):
            assert main(argv) == 2
            err = _one_line_error(capsys)
            assert f"{path}:{line}: alphas[1]: α = {alpha:g} pushes feature 'f0'" in err and why in err, err
        assert not (tmp_path / "runs").exists()


def test_push_limit_follows_the_model_dtype() -> None:
    import torch

    from steering.engine import push_problem
    from steering.feature_bank import FeatureBank

    bank = FeatureBank(decoder=torch.full((1, 4), 0.5), ids=["f0"])  # ‖v‖ = 1
    assert push_problem(bank, ["f0"], [6e4], torch.float32) is None
    assert push_problem(bank, ["f0"], [-2e5], torch.float16)[0] == -2e5
    assert "float16" in push_problem(bank, ["f0"], [1.0, -2e5], torch.float16)[1]
    assert push_problem(bank, ["f0"], [0.0], torch.float16) is None  # the baseline pushes nothing


@pytest.fixture(scope="module")
def tiny():
    import torch

    from steering.adapters import HFCausalLMAdapter
    from steering.feature_bank import FeatureBank
    from tests.tiny_models import make_tiny_llama

    model, tok = make_tiny_llama(seed=3)
    bank = FeatureBank(decoder=torch.randn(2, 32, generator=torch.Generator().manual_seed(0)), ids=["f0", "f1"],
                       target_concepts={"f0": ["pleural_effusion"], "f1": ["pleural_effusion"]})
    return HFCausalLMAdapter(model, tok, name="tiny-llama"), bank


def _engine(tiny, batch_size=4, **settings):
    from steering.engine import GenerationSettings, SteeringEngine, SteeringSpec

    adapter, bank = tiny
    return SteeringEngine(adapter, bank, spec=SteeringSpec(layer=1),
                          settings=GenerationSettings(max_new_tokens=6, **settings), batch_size=batch_size)


class _Sabotage:
    """Make batch row `row`'s logits `value` from generated token `step` on (as an overflow would)."""

    def __init__(self, lm_head, row: int, step: int, value: float) -> None:
        self.row, self.step, self.value, self.calls = row, step, value, 0
        self.handle = lm_head.register_forward_hook(self)

    def __call__(self, _module, _args, out):
        if self.calls >= self.step:
            out = out.clone()
            out[self.row, -1] = self.value
        self.calls += 1
        return out


CASE = {"c": {"prompt": "no pleural effusion ."}}


@pytest.mark.parametrize("value, kind", [(float("nan"), "NaN"), (float("inf"), "infinite"), (0.0, "constant")])
@pytest.mark.parametrize("do_sample", [False, True])
def test_non_finite_logits_make_an_error_row_and_spare_the_batch(tiny, value, kind, do_sample) -> None:
    from steering.engine import plan_rows

    rows = plan_rows(["c"], ["f0", "f1"], [1.0])  # ordered: baseline, f0, f1
    clean = {r.row.key(): r for r in _engine(tiny, do_sample=do_sample).generate(CASE, rows)}
    sab = _Sabotage(tiny[0].model.lm_head, row=1, step=2, value=value)
    try:
        got = {r.row.key(): r for r in _engine(tiny, do_sample=do_sample).generate(CASE, rows)}
    finally:
        sab.handle.remove()
    bad = got[("c", "f0", 1.0)]
    assert bad.finish_reason == "error" and f"logits became {kind}" in bad.error and "token 3" in bad.error
    assert bad.token_ids == clean[("c", "f0", 1.0)].token_ids[:2]  # what came before the failure
    for key in (("c", "", 0.0), ("c", "f1", 1.0)):  # the batch's other rows are untouched
        assert got[key].error is None and got[key].token_ids == clean[key].token_ids


def test_error_rows_are_stored_with_their_reason_and_evaluated_as_errors(tiny, tmp_path) -> None:
    from evaluation.pipeline import evaluate_run
    from steering.engine import plan_rows
    from steering.store import StudyStore

    store = StudyStore.open(tmp_path)
    store.add_cases([{"case_id": "c", "inputs": CASE["c"], "split": "test"}])
    store.add_features([{"feature_id": f, "source": "sae", "bank_index": i, "target_concepts": ["pleural_effusion"]}
                        for i, f in enumerate(["f0", "f1"])])
    rows = plan_rows(["c"], ["f0", "f1"], [1.0])
    sab = _Sabotage(tiny[0].model.lm_head, row=1, step=0, value=float("nan"))
    try:
        report = _engine(tiny).sweep(store, CASE, rows, progress=False)
    finally:
        sab.handle.remove()
    assert report.generated == 3
    gens = {r["feature_id"]: r for r in store.rows("generations")}
    assert gens["f0"]["finish_reason"] == "error" and "NaN at generated token 1" in gens["f0"]["error"]
    assert gens["f0"]["text"] == "" and gens["f1"]["error"] is None and gens[""]["error"] is None
    evaluate_run(store, extractor="lexicon", progress=False)
    verdicts = {(v["generation_id"], v["method"]): v for v in store.rows("verdicts")}
    v = verdicts[(gens["f0"]["id"], "entity_diff")]
    assert v["label"] is None and v["error"].startswith("generation failed: steered report: the logits became NaN")
    assert verdicts[(gens["f1"]["id"], "entity_diff")]["error"] is None
    # a resumed sweep does not generate the failed row again (it is stored, with its reason)
    assert _engine(tiny).sweep(store, CASE, rows, progress=False).generated == 0
    store.close()


# ---- protocol.yaml and manifest.json: no window for a different protocol ----------------------

def test_a_kill_between_manifest_and_freeze_leaves_no_window(tmp_path, capsys, monkeypatch) -> None:
    import protocols.study as study_mod

    a = write_tiny_study(tmp_path, n_cases=1, max_new_tokens=2, features=("f0",), alphas=(1.0,))
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    b = _edit(write_tiny_study(b_dir, n_cases=1, max_new_tokens=2, features=("f0",), alphas=(2.0,)))
    runs = tmp_path / "runs"
    run_dir = runs / "tiny"

    def killed(*_a, **_k):
        raise KeyboardInterrupt  # the sweep dies after manifest.json, before protocol.yaml

    monkeypatch.setattr(study_mod, "write_atomic", killed)
    assert main(["sweep", str(a), "--runs-dir", str(runs), "--no-progress"]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert (run_dir / "manifest.json").exists() and not (run_dir / "protocol.yaml").exists()
    for argv in (["sweep", str(b), "--runs-dir", str(runs)], ["validate", str(b), "--runs-dir", str(runs)]):
        assert main(argv) == 2
        assert "different protocol" in _one_line_error(capsys)
    assert main(["sweep", str(a), "--runs-dir", str(runs), "--no-progress"]) == 0  # the same one resumes
    assert (run_dir / "protocol.yaml").read_bytes() == a.read_bytes()
    capsys.readouterr()
    assert main(["sweep", str(b), "--runs-dir", str(runs)]) == 2
    assert "different protocol" in _one_line_error(capsys)


def test_a_frozen_protocol_without_manifest_must_be_the_same(tmp_path, capsys) -> None:
    """The state older versions could leave (protocol.yaml frozen first, then killed)."""
    a = write_tiny_study(tmp_path, n_cases=1, max_new_tokens=2, features=("f0",), alphas=(1.0,))
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "protocol.yaml").write_text(a.read_text().replace("- 1.0", "- 3.0"))
    assert main(["validate", str(a), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "holds a different protocol" in _one_line_error(capsys)
    (run_dir / "protocol.yaml").write_bytes(a.read_bytes())
    (run_dir / "manifest.json").write_text('{"note": "someone else\'s manifest"}')
    assert main(["validate", str(a), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "not a radsteer manifest" in _one_line_error(capsys)
    (run_dir / "manifest.json").unlink()
    assert main(["validate", str(a), "--runs-dir", str(tmp_path / "runs")]) == 0
