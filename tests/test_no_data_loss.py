"""radsteer never deletes or overwrites what it did not create (issue 11, "Data loss")."""

from __future__ import annotations

import json

import pytest
import yaml

from protocols.cli import main
from steering.errors import RadsteerError
from steering.store.files import MARKER, claim_dir, replace_dir, write_atomic
from tests.helpers_steering import write_tiny_study
from tests.test_concept_vectors import CONCEPTS


def _concept_protocol(root, vectors_path: str):
    path = write_tiny_study(root, n_cases=2)
    data = yaml.safe_load(path.read_text())
    data["features"] = {
        "source": "concept", "path": vectors_path,
        "items": [{"id": "effusion", "targets": ["pleural_effusion"]}, {"id": "pacer", "targets": ["pacemaker"]}],
        "concepts": [{"id": c.id, "positive": list(c.positive), "negative": list(c.negative)} for c in CONCEPTS],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", ["vectors", "run", "validate"])
def test_features_path_dot_leaves_the_study_intact(tmp_path, capsys, command) -> None:
    """`path: .` once wiped the protocol, cases and model; now every command refuses, one line."""
    path = _concept_protocol(tmp_path, ".")
    before = _snapshot(tmp_path)
    argv = {"vectors": ["vectors", "build", str(path), "--force"],
            "run": ["run", str(path), "--runs-dir", str(tmp_path / "runs")],
            "validate": ["validate", str(path)]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "features.path" in err and "did not write" in err, err
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "runs").exists()


def test_user_saelens_folder_is_not_replaced(tmp_path, capsys) -> None:
    """A folder with someone's own cfg.json (no radsteer block) is not radsteer's to rebuild."""
    path = _concept_protocol(tmp_path, "theirs")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "cfg.json").write_text(json.dumps({"d_in": 32, "d_sae": 2}))
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    assert main(["vectors", "build", str(path), "--force"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "mine"


def test_empty_folder_is_used_and_own_vectors_are_replaced_atomically(tmp_path, capsys) -> None:
    path = _concept_protocol(tmp_path, "vectors")
    (tmp_path / "vectors").mkdir()
    assert main(["vectors", "build", str(path)]) == 0
    folder = tmp_path / "vectors"
    assert (folder / MARKER).is_file() and (folder / "cfg.json").is_file()
    first = (folder / "sae_weights.safetensors").read_bytes()
    assert main(["vectors", "build", str(path), "--force"]) == 0
    assert (folder / "sae_weights.safetensors").read_bytes() == first  # same sentences: same vectors
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".vectors")]
    assert leftovers == []
    capsys.readouterr()


def test_vectors_built_before_the_marker_are_still_recognised(tmp_path, capsys) -> None:
    path = _concept_protocol(tmp_path, "vectors")
    assert main(["vectors", "build", str(path)]) == 0
    (tmp_path / "vectors" / MARKER).unlink()  # as an older radsteer left them
    assert main(["vectors", "build", str(path), "--force"]) == 0
    (tmp_path / "vectors" / MARKER).unlink()
    (tmp_path / "vectors" / "README").write_text("added by hand")  # no longer radsteer's alone
    assert main(["vectors", "build", str(path), "--force"]) == 2
    assert (tmp_path / "vectors" / "README").read_text() == "added by hand"
    capsys.readouterr()


def test_a_stray_tmp_folder_beside_the_target_is_not_deleted(tmp_path, capsys) -> None:
    """The old code deleted `<path>.tmp` unconditionally before writing."""
    path = _concept_protocol(tmp_path, "vectors")
    (tmp_path / "vectors.tmp").mkdir()
    (tmp_path / "vectors.tmp" / "keep.txt").write_text("keep")
    assert main(["vectors", "build", str(path)]) == 0
    assert (tmp_path / "vectors.tmp" / "keep.txt").read_text() == "keep"
    capsys.readouterr()


def test_replace_dir_failure_keeps_the_old_folder(tmp_path) -> None:
    target = tmp_path / "out"
    replace_dir(target, "thing", lambda d: (d / "a.txt").write_text("old"), what="things")

    def boom(d):
        (d / "a.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_dir(target, "thing", boom, what="things")
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(RadsteerError, match="did not write"):
        replace_dir(target, "other-kind", lambda d: None, what="other things")


def test_claim_dir_and_write_atomic(tmp_path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "data.csv").write_text("precious")
    with pytest.raises(RadsteerError, match="did not write"):
        claim_dir(user, "stats", what="statistics tables")
    own = claim_dir(tmp_path / "stats", "stats", what="statistics tables")
    assert claim_dir(own, "stats", what="statistics tables") == own
    f = write_atomic(own / "x.csv", "a,b\n")
    assert f.read_text() == "a,b\n" and oct(f.stat().st_mode & 0o777) == "0o644"
    with pytest.raises(ZeroDivisionError):
        write_atomic(own / "x.csv", lambda p: (p.write_text("half"), 1 / 0))
    assert f.read_text() == "a,b\n" and sorted(p.name for p in own.iterdir()) == [MARKER, "x.csv"]


@pytest.fixture
def small_study(tmp_path):
    from evaluation.synthetic import make_synthetic_study

    run_dir = tmp_path / "runs" / "s"
    make_synthetic_study(run_dir, n_cases=4, n_features=2, seed=1)
    return run_dir


def test_stats_and_report_never_overwrite_user_files(small_study, tmp_path, capsys) -> None:
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "summary.csv").write_text("my own table")
    assert main(["stats", str(small_study), "--out", str(user_dir)]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (user_dir / "summary.csv").read_text() == "my own table"

    page = tmp_path / "notes.html"
    page.write_text("<html>my notes</html>")
    assert main(["report", str(small_study), "-o", str(page)]) == 2
    assert "not a radsteer report" in capsys.readouterr().err
    assert page.read_text() == "<html>my notes</html>"
    (tmp_path / "r_tables").mkdir()
    (tmp_path / "r_tables" / "keep.txt").write_text("keep")
    assert main(["report", str(small_study), "-o", str(tmp_path / "r.html")]) == 2
    assert (tmp_path / "r_tables" / "keep.txt").read_text() == "keep" and not (tmp_path / "r.html").exists()

    # radsteer's own outputs are replaced on the next run
    for _ in range(2):
        assert main(["stats", str(small_study)]) == 0
        assert main(["report", str(small_study)]) == 0
    assert (small_study / "stats" / MARKER).is_file() and (small_study / "report.html").is_file()
    assert not [p for p in small_study.rglob(".*.tmp")]
    capsys.readouterr()


def test_older_unmarked_stats_folder_is_still_recognised(small_study, capsys) -> None:
    (small_study / "stats").mkdir()
    (small_study / "stats" / "summary.csv").write_text("old,table\n")
    assert main(["stats", str(small_study)]) == 0
    assert (small_study / "stats" / MARKER).is_file()
    capsys.readouterr()


def test_demo_keeps_an_edited_protocol(tmp_path) -> None:
    from protocols.commands.demo import install_demo

    proto = install_demo(tmp_path)
    proto.write_text(proto.read_text() + "\n# my edit\n")
    with pytest.raises(RadsteerError, match="will not overwrite"):
        install_demo(tmp_path)
    assert proto.read_text().endswith("# my edit\n")


def test_demo_model_cache_never_deletes_a_foreign_folder(tmp_path, monkeypatch) -> None:
    from steering import demo_model

    monkeypatch.setenv(demo_model.CACHE_ENV, str(tmp_path))
    foreign = tmp_path / "smollm2-135m-instruct"
    foreign.mkdir()
    (foreign / "model.safetensors").write_text("not the demo model, and no tokenizer.json")
    with pytest.raises(RadsteerError, match="did not write"):
        demo_model.demo_model_dir()
    assert (foreign / "model.safetensors").read_text().startswith("not the demo")
