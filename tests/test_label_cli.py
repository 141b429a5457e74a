"""`radsteer label PAIRS.jsonl -o OUT.jsonl`: output rows, every error path, atomic output,
the judge plug-in point of `label_pairs`, and the RadGraph backend through the same command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from evaluation.labelling import LabelPair, label_pairs, read_pairs
from protocols.cli import main

PAIRS = yaml.safe_load((Path(__file__).parent / "data" / "lexicon_pairs.yaml").read_text(encoding="utf-8"))


def _row(p: dict) -> dict:
    return {"id": p["id"], "baseline": p["baseline"], "steered": p["steered"], "target": p["target"],
            "direction": p["direction"], "description": f"feature about {p['target']}"}


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_label_writes_one_row_per_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [_row(p) for p in PAIRS]
    rows[0]["direction"] = "+1"  # string spellings of the direction are accepted
    src = _write(tmp_path / "pairs.jsonl", rows[:1] + [""] + rows[1:])  # a blank line is skipped
    out = tmp_path / "labels.jsonl"
    assert main(["label", str(src), "-o", str(out)]) == 0
    got = _read(out)
    assert [r["id"] for r in got] == [p["id"] for p in PAIRS]
    for r, p in zip(got, PAIRS, strict=True):
        assert set(r) == {"id", "on_target", "off_target", "label", "evidence", "method"}
        assert r["label"] == p["label"], p["id"]
        assert (r["on_target"], r["off_target"]) == (p["label"] in ("on", "both"), p["label"] in ("off", "both"))
        assert r["method"] == "entity_diff" and r["evidence"]["extractor"] == "lexicon"
        described = [e["description"] for e in r["evidence"]["on_target"] + r["evidence"]["off_target"]]
        assert sorted(described) == sorted(p["diff"])
    err = capsys.readouterr().err
    assert f"labelled {len(PAIRS)} pair(s) with lexicon" in err
    assert not list(tmp_path.glob(".labels.jsonl.*"))  # no temporary file left behind


def test_large_inputs_show_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _row(PAIRS[0])
    rows = [{**base, "id": i} for i in range(150)]  # integer ids are kept as integers
    out = tmp_path / "labels.jsonl"
    assert main(["label", str(_write(tmp_path / "p.jsonl", rows)), "-o", str(out), "--batch-size", "32"]) == 0
    got = _read(out)
    assert [r["id"] for r in got] == list(range(150)) and {r["label"] for r in got} == {PAIRS[0]["label"]}
    assert "150/150" in capsys.readouterr().err


BAD_ROWS = [
    ("{not json", "line 2: not valid JSON"),
    ("[1, 2]", "line 2: each line must be one JSON object"),
    ({"id": "b", "baseline": "x", "target": "effusion", "direction": 1}, "line 2: missing field 'steered'"),
    ({"id": "b", "baseline": 3, "steered": "x", "target": "effusion", "direction": 1},
     "line 2: field 'baseline': must be a string"),
    ({"id": "b", "baseline": "x", "steered": "y", "target": "efusion", "direction": 1},
     "line 2: field 'target': target 'efusion' is not a concept id, name or synonym in the lexicon; "
     "did you mean: pleural_effusion"),
    ({"id": "b", "baseline": "x", "steered": "y", "target": [], "direction": 1},
     "line 2: field 'target': must be a concept name or a non-empty list"),
    ({"id": "b", "baseline": "x", "steered": "y", "target": "lung", "direction": 1},
     "line 2: field 'target': target 'lung' is an anatomy term"),
    ({"id": "b", "baseline": "x", "steered": "y", "target": "effusion", "direction": 2},
     "line 2: field 'direction': direction must be +1 or -1, got 2"),
    ({"id": "a", "baseline": "x", "steered": "y", "target": "effusion", "direction": -1},
     "line 2: field 'id': duplicate id 'a' (first on line 1)"),
    ({"id": True, "baseline": "x", "steered": "y", "target": "effusion", "direction": -1},
     "line 2: field 'id': must be a non-empty string or an integer"),
    ({"id": "b", "baseline": "x", "steered": "y", "target": "effusion", "direction": 1, "description": 5},
     "line 2: field 'description': must be a string"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_ROWS, ids=[m.split(": ", 1)[1][:30] for _, m in BAD_ROWS])
def test_a_malformed_row_is_one_line_naming_file_line_and_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bad, message: str) -> None:
    good = {"id": "a", "baseline": "No effusion.", "steered": "Small effusion.", "target": "effusion", "direction": 1}
    src = _write(tmp_path / "pairs.jsonl", [good, bad, good | {"id": "c"}])
    out = tmp_path / "labels.jsonl"
    out.write_text("previous results\n")
    assert main(["label", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"radsteer label: error: {src}:{message.removeprefix('line ')}"), err
    assert out.read_text() == "previous results\n"  # nothing written, nothing lost


@pytest.mark.parametrize(("setup", "message"), [
    ("missing", "pairs file not found"),
    ("empty", "no rows (expected one JSON object per line"),
    ("no_dir", "does not exist; create it first"),
    ("same", "would overwrite the input"),
    ("latin1", "not UTF-8 text"),
])
def test_file_level_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str, message: str) -> None:
    src, out = tmp_path / "pairs.jsonl", tmp_path / "labels.jsonl"
    if setup == "empty":
        src.write_text("\n\n")
    elif setup != "missing":
        _write(src, [_row(PAIRS[0])])
    if setup == "no_dir":
        out = tmp_path / "nowhere" / "labels.jsonl"
    if setup == "same":
        out = src
    if setup == "latin1":
        src.write_bytes("{\"id\": \"caf\u00e9\"}\n".encode("latin-1"))
    before = src.read_bytes() if src.exists() else None
    assert main(["label", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert (src.read_bytes() if src.exists() else None) == before
    assert setup == "same" or not out.exists()


def test_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(tmp_path / "pairs.jsonl", [_row(PAIRS[0])])
    with pytest.raises(SystemExit):
        main(["label", str(src), "-o", str(tmp_path / "o.jsonl"), "--extractor", "spacy"])
    assert "invalid choice: 'spacy'" in capsys.readouterr().err
    assert main(["label", str(src), "-o", str(tmp_path / "o.jsonl"), "--batch-size", "0"]) == 2
    assert "--batch-size must be ≥ 1" in capsys.readouterr().err


def test_read_pairs_resolves_targets(tmp_path: Path) -> None:
    src = _write(tmp_path / "p.jsonl", [{"id": 1, "baseline": "a", "steered": "b", "target": ["ETT", "NG tube"],
                                         "direction": "-"}])
    (pair,) = read_pairs(src)
    assert pair == LabelPair(1, "a", "b", ("endotracheal_tube", "enteric_tube"), -1, None, ("ETT", "NG tube"))


def test_label_pairs_takes_a_judge_and_a_combine_rule() -> None:
    """The judge helper's plug-in point: one verdict per pair, both kept, combined on request."""
    seen: list[LabelPair] = []

    def judge(pairs):
        seen.extend(pairs)
        return [{"on_target": False, "off_target": False, "label": "none", "evidence": {"why": "judge"}}
                for _ in pairs]

    rows = [_row(p) for p in PAIRS[:3]]
    plain = label_pairs(rows, "lexicon")
    judged = label_pairs(rows, "lexicon", judge)
    assert [p.id for p in seen] == [r["id"] for r in rows] and seen[0].description == rows[0]["description"]
    for a, b in zip(plain, judged, strict=True):
        assert {k: b[k] for k in a} == a  # the top level stays the entity diff's
        assert b["verdicts"]["llm_judge"]["evidence"] == {"why": "judge"}
        assert b["verdicts"]["entity_diff"]["label"] == a["label"]

    def both_must_agree(ed, jd):
        agree = ed["label"] == jd["label"]
        return {"on_target": ed["on_target"] and agree, "off_target": ed["off_target"] and agree,
                "label": ed["label"] if agree else "none", "evidence": {"agree": agree}}

    combined = label_pairs(rows, "lexicon", judge, combine=both_must_agree)
    assert [r["method"] for r in combined] == ["combined"] * 3
    assert [r["label"] for r in combined] == ["none"] * 3
    with pytest.raises(RuntimeError, match="the judge returned 0 verdicts for 3 pairs"):
        label_pairs(rows, "lexicon", lambda pairs: [])


@pytest.mark.slow
def test_label_with_the_radgraph_backend(tmp_path: Path) -> None:
    """The same command on a tiny random-weight RadGraph archive: it runs offline and every
    verdict is one of the four labels (the weights are random, so the labels are not checked)."""
    pytest.importorskip("radgraph")
    from tests.helpers_radgraph import build_tiny_radgraph_archive

    archive = build_tiny_radgraph_archive(tmp_path / "build", "radgraph", seed=1)
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(archive, cache / archive.name)
    src = _write(tmp_path / "pairs.jsonl", [_row(p) for p in PAIRS[:5]])
    out = tmp_path / "labels.jsonl"
    assert main(["label", str(src), "-o", str(out), "--extractor", "radgraph", "--radgraph-cache", str(cache),
                 "--quiet"]) == 0
    got = _read(out)
    assert [r["id"] for r in got] == [p["id"] for p in PAIRS[:5]]
    assert all(r["label"] in ("on", "off", "both", "none") and r["evidence"]["extractor"] == "radgraph" for r in got)
