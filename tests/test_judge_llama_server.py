"""The judge against a real llama.cpp server (llama-cpp-python[server], scripts/judge-server.sh)
serving the bundled SmolLM2-135M GGUF on 127.0.0.1.

The model is too small to judge; what is checked is the protocol handling against a server as it
really answers: format negotiation (json_schema → HTTP 500 → json_object, once, remembered),
re-asks after invalid answers, every item ending as a verdict or a counted error (never a silent
"none"). The commands' counts and exit status against this server's answers are checked with the
loopback server answering as llama.cpp does (tests/test_judge_interop.py).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from evaluation.judge import JudgeConfig, LLMJudge
from evaluation.judge_prompt import JudgeItem

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python[server] is not installed: bash scripts/judge-server.sh --install-only"),
]


def _die_with_parent() -> None:
    """The server must not outlive a killed test run (Linux: parent-death signal)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError as exc:  # the library without its server extra
        pytest.skip(f"llama-cpp-python's server extra is missing ({exc}): bash scripts/judge-server.sh --install-only")
    from steering.demo_model import gguf_path

    port = _free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"radsteer-llama-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--model_alias", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2"],
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)  # noqa: PLW1509
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=5) as r:  # noqa: S310 - loopback
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server did not come up in 180 s; see {log.name}")
            time.sleep(1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _raw(base: str, response_format: dict) -> tuple[int, str]:
    body = json.dumps({"model": "smollm2", "max_tokens": 8, "response_format": response_format,
                       "messages": [{"role": "user", "content": "Reply with a JSON object."}]}).encode()
    req = urllib.request.Request(f"{base}/chat/completions", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:  # noqa: S310 - loopback
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_server_answers_json_schema_as_documented(llama_server) -> None:
    """The fact the negotiation is built on (docs/design.md): 500 naming response_format."""
    status, body = _raw(llama_server, {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}})
    assert status == 500 and "response_format" in body, (status, body[:300])
    assert _raw(llama_server, {"type": "json_object"})[0] == 200


ITEMS = [
    JudgeItem(key=i, baseline="Heart size is normal. The lungs are clear.", steered=steered, direction=d,
              targets=("pleural_effusion",), description="pleural effusion")
    for i, (steered, d) in enumerate([
        ("Small left pleural effusion. Heart size is normal.", 1),
        ("Large right pneumothorax. The lungs are otherwise clear.", -1),
    ])
]


def test_judge_negotiates_reasks_and_counts_against_llama_cpp(llama_server, caplog) -> None:
    judge = LLMJudge(JudgeConfig(model="smollm2", base_url=llama_server, api_key_env=None, concurrency=1,
                                 max_output_tokens=120, timeout_s=300, invalid_answer_retries=1))
    with caplog.at_level(logging.WARNING, logger="evaluation.judge"):
        results = judge.judge_many(ITEMS)
    assert judge.response_format == "json_object"  # negotiated without a flag
    refusals = [r for r in caplog.records if "refused response_format json_schema" in r.getMessage()]
    assert len(refusals) == 1  # once per run
    assert len(results) == len(ITEMS)
    for r in results:  # a verdict or a counted error, never a silent "none"
        assert (r.answer is None) != (r.error is None), r
        if r.error is not None:
            assert r.label is None
            if r.error.startswith("invalid judge answer"):
                # asked again once, with the reason; the first item also carried the refused json_schema probe
                assert r.attempts == 2 + (r.key == 0), r
    t = judge.totals
    assert t.answers + t.errors == len(ITEMS) and t.errors == sum(r.error is not None for r in results)
    assert t.requests >= len(ITEMS) + 1  # + the refused json_schema probe
    # a second batch remembers the format: no new refusal
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="evaluation.judge"):
        judge.judge_many(ITEMS[:1])
    assert not [r for r in caplog.records if "refused" in r.getMessage()]
