from evaluation.textdiff import render_side, word_diff


def test_segments_rebuild_both_texts() -> None:
    a = "No pleural effusion. Heart size normal."
    b = "Small left pleural effusion. Heart size normal."
    segs = word_diff(a, b)
    assert "".join(s.text for s in segs if s.op != "insert") == a
    assert "".join(s.text for s in segs if s.op != "delete") == b
    assert any(s.op == "insert" and "Small left" in s.text for s in segs)


def test_rendering_escapes_model_text() -> None:
    segs = word_diff("ok", "<script>alert(1)</script> ok")
    html_out = render_side(segs, "steered")
    assert "<script>" not in html_out and "&lt;script&gt;" in html_out
