"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol.

The LLM API is the one boundary the tests cannot reach, so this stands in for it — over real
sockets, with real status codes, Retry-After headers, slow answers and malformed output, so the
judge's client code runs exactly as it would against OpenAI, vLLM or Ollama. Used by the tests
and by benchmarks/evaluation.py.

Behaviour is chosen per request by markers in the steered report (so one run can mix cases):
  #malformed  content that is not JSON          #schema   JSON missing required fields
  #429once    429 (Retry-After) on the first request for that prompt, then an answer
  #500        always HTTP 500                   #slow     sleeps `slow_s` before answering
  #on / #off  the answer's on-/off-target change (otherwise `decide` or both false)
  #reask      malformed JSON, unless the request carries the client's re-ask (then a valid answer)
  #echokey    a valid answer whose rationale echoes the Authorization header it was sent

Response formats, as real servers answer them:
  reject_json_schema=True         400 naming response_format (OpenAI models without structured outputs)
  reject_json_schema="llama.cpp"  HTTP 500 with llama-cpp-python's validation message ("Input should be
                                  'text' or 'json_object'"), as its OpenAI-compatible server answers
  reject_json_object=True         422 naming response_format (servers that take plain text only)

Other tasks (feature explanations, detection scoring) pass `respond(body, user_prompt) -> content`;
their markers are then read from the whole user prompt.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_STEERED = re.compile(r"<steered_report>\n(.*?)\n</steered_report>", re.S)
_BASELINE = re.compile(r"<baseline_report>\n(.*?)\n</baseline_report>", re.S)

Decide = Callable[[str, str, str], tuple[bool, bool]]  # (baseline, steered, user prompt) -> (on, off)
Respond = Callable[[dict[str, Any], str], str]  # (request body, user prompt) -> message content


class FakeOpenAIServer:
    """`with FakeOpenAIServer() as srv: ... srv.base_url ... srv.requests`"""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        delay_s: float = 0.0,
        slow_s: float = 2.0,
        retry_after: str = "0",
        reject_json_schema: bool | str = False,
        reject_json_object: bool = False,
        decide: Decide | None = None,
        respond: Respond | None = None,
    ) -> None:
        self.api_key, self.delay_s, self.slow_s = api_key, delay_s, slow_s
        self.retry_after, self.reject_json_schema, self.decide = retry_after, reject_json_schema, decide
        self.respond = respond
        self.reject_json_object = reject_json_object
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        self.statuses: Counter[int] = Counter()
        self.max_in_flight = 0
        self._in_flight = 0
        self._per_prompt: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # ---- the protocol -----------------------------------------------------------------------

    def _reply(self, body: dict[str, Any], auth: str | None) -> tuple[int, dict[str, str], dict[str, Any], float]:
        """(status, headers, JSON body, seconds to wait before answering)."""
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            # Real servers echo (part of) the key they were given; the client must scrub it.
            return 401, {}, _error(f"Incorrect API key provided: {auth}.", "invalid_request_error"), 0.0
        messages = body.get("messages") or []
        user = next((m.get("content", "") for m in messages if m.get("role") == "user"), "")
        fmt = (body.get("response_format") or {}).get("type")
        if self.reject_json_schema == "llama.cpp" and fmt == "json_schema":
            return 500, {}, _error(LLAMA_CPP_JSON_SCHEMA_ERROR, "internal_server_error"), 0.0
        if self.reject_json_schema and fmt == "json_schema":
            return 400, {}, _error("Invalid parameter: 'response_format' of type 'json_schema' is not supported "
                                   "with this model.", "invalid_request_error"), 0.0
        if self.reject_json_object and fmt in ("json_schema", "json_object"):
            return 422, {}, {"detail": [{"type": "literal_error", "loc": ["body", "response_format", "type"],
                                         "msg": "Input should be 'text'", "input": fmt}]}, 0.0
        steered_m, baseline_m = _STEERED.search(user), _BASELINE.search(user)
        steered = steered_m.group(1) if steered_m else ""
        if self.respond is not None:
            steered = user  # markers anywhere in the prompt
        baseline = baseline_m.group(1) if baseline_m else ""
        with self._lock:
            self._per_prompt[user] += 1
            nth = self._per_prompt[user]
        delay = self.delay_s + (self.slow_s if "#slow" in steered else 0.0)
        if "#500" in steered:
            return 500, {}, _error("The server had an error while processing your request.", "server_error"), delay
        if "#429once" in steered and nth == 1:
            return 429, {"Retry-After": self.retry_after}, _error("Rate limit reached.", "requests"), delay
        reasked = any(m.get("role") == "assistant" for m in messages)
        if "#reask" in steered and not reasked:
            content = "Sure! The steered report mentions an effusion."
        elif "#echokey" in steered:
            content = json.dumps({
                "on_target_change": True, "off_target_change": False, "on_target_evidence": "",
                "off_target_evidence": "", "clinically_coherent": True,
                "rationale": f"request carried {auth}",
            })
        elif "#malformed" in steered:
            content = '{"on_target_change": true, "off_target_change": '  # truncated JSON
        elif "#schema" in steered:
            content = json.dumps({"on_target_change": "yes", "rationale": 3})
        elif self.respond is not None:
            content = self.respond(body, user)
        else:
            if self.decide is not None:
                on, off = self.decide(baseline, steered, user)
            else:
                on, off = "#on" in steered, "#off" in steered
            content = json.dumps({
                "on_target_change": on, "off_target_change": off,
                "on_target_evidence": "target concept asserted" if on else "",
                "off_target_evidence": "other finding changed" if off else "",
                "clinically_coherent": True, "rationale": "compared the two reports",
            })
        completion = {
            "id": f"chatcmpl-{nth}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content, "refusal": None}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }
        return 200, {}, completion, delay

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed-ACK stall)

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {}, _error(f"unknown path {self.path}", "invalid_request_error"))
                    return
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    self._send(400, {}, _error("request body is not JSON", "invalid_request_error"))
                    return
                with server._lock:
                    server.requests += 1
                    server.bodies.append(body)
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    status, headers, payload, delay = server._reply(body, self.headers.get("Authorization"))
                    if delay:
                        time.sleep(delay)
                    with server._lock:
                        server.statuses[status] += 1
                    self._send(status, headers, payload)
                finally:
                    with server._lock:
                        server._in_flight -= 1

            def _send(self, status: int, headers: dict[str, str], payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        return Handler


LLAMA_CPP_JSON_SCHEMA_ERROR = (
    "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or "
    "'json_object'\", 'input': 'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}]"
)


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}
