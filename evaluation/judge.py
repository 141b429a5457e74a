"""The LLM judge: steered vs baseline report → on/off-target change, through any
OpenAI-compatible chat-completions server (OpenAI, Azure OpenAI's /openai/v1 endpoint, vLLM,
Ollama).

Why it is built this way:
- bounded concurrency (a semaphore) because judging thousands of generations one at a time is
  slow and unbounded fan-out gets rate-limited;
- our own retries (exponential backoff with jitter, honouring Retry-After) with the openai
  client's retries switched off, so every HTTP request is counted against the run's budget;
- a response cache keyed by (model, prompt hash): a re-run sends nothing;
- every failure ends as a result with `error` set — never as the label "none";
- the API key is read from the environment variable *named* in the config, never stored,
  and scrubbed from every error message and every stored answer field;
- the response format is negotiated (`auto`): json_schema, then json_object, then plain text
  with the schema in the prompt, each step taken once per run when the server rejects the
  format (llama.cpp answers json_schema with HTTP 500, OpenAI-style servers with 400/422);
- an invalid answer is asked again with the reason, so a small model can correct itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from evaluation.judge_cache import JudgeCache
from evaluation.judge_prompt import (
    ANSWER_JSON_SCHEMA,
    PROMPT_VERSION,
    InvalidAnswer,
    JudgeAnswer,
    JudgeItem,
    build_messages,
    parse_answer,
    prompt_hash,
    reask_message,
    schema_instruction,
)
from evaluation.labels import label_of
from steering.errors import RadsteerError

log = logging.getLogger(__name__)

ResponseFormat = Literal["auto", "json_schema", "json_object", "text"]
RESPONSE_FORMATS: tuple[str, ...] = ("auto", "json_schema", "json_object", "text")
_FALLBACK = {"json_schema": "json_object", "json_object": "text"}  # what `auto` tries next
BUDGET_EXHAUSTED = "budget exhausted"
_RETRYABLE_STATUS = {408, 409, 429}


@dataclass
class JudgeConfig:
    """Where and how to ask. The protocol's `judge:` section maps onto these fields."""

    model: str
    base_url: str | None = None  # None: the OpenAI API
    api_key_env: str | None = "OPENAI_API_KEY"  # the variable's NAME; None for keyless local servers
    concurrency: int = 8  # the default of every radsteer command and protocol (protocols/config.py)
    timeout_s: float = 60.0
    max_retries: int = 4  # retries after the first attempt, on 429 / 5xx / timeouts / connection errors
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    invalid_answer_retries: int = 1  # re-asks after malformed JSON or a schema violation
    max_calls: int | None = None  # HTTP requests per run, retries included
    max_tokens: int | None = None  # prompt + completion tokens per run (in-flight calls may overshoot)
    temperature: float | None = 0.0  # None: leave the server's default (models that reject 0)
    max_output_tokens: int | None = None
    response_format: ResponseFormat = "auto"  # auto: json_schema → json_object → text, as the server allows

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise RadsteerError("judge.model is empty: name the judge model (e.g. --judge-model gpt-4o-mini)")
        if self.concurrency < 1:
            raise RadsteerError(f"judge.concurrency must be ≥ 1, not {self.concurrency}")
        if self.timeout_s <= 0:
            raise RadsteerError(f"judge.timeout_s must be > 0, not {self.timeout_s}")
        if self.max_retries < 0 or self.invalid_answer_retries < 0:
            raise RadsteerError("judge.max_retries and judge.invalid_answer_retries must be ≥ 0")
        for name in ("max_calls", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise RadsteerError(f"judge.{name} must be ≥ 0 or unset, not {value}")
        if self.response_format == "none":  # the earlier name of `text`
            self.response_format = "text"
        if self.response_format not in RESPONSE_FORMATS:
            raise RadsteerError(
                f"judge.response_format must be one of {', '.join(RESPONSE_FORMATS)}, not {self.response_format!r}"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "judge") -> JudgeConfig:
        """Build from a protocol section; unknown keys are an error naming the key."""
        if "api_key" in data:
            raise RadsteerError(f"{where}.api_key: keys are not accepted in files; put the key in an "
                                f"environment variable and name that variable in {where}.api_key_env")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RadsteerError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "model" not in data:
            raise RadsteerError(f"{where}.model is missing: name the judge model")
        return cls(**dict(data))

    def request_settings(self) -> dict[str, Any]:
        """The parts of the request that shape the answer (hashed into the prompt hash)."""
        return {"temperature": self.temperature, "max_output_tokens": self.max_output_tokens}

    def read_api_key(self) -> str:
        if not self.api_key_env:
            return "unused"  # keyless local servers (vLLM, Ollama); the client insists on a value
        key = os.environ.get(self.api_key_env)
        if not key:
            raise RadsteerError(
                f"the judge's API key variable {self.api_key_env} is not set (or empty): export it in the "
                f"environment; keys are never read from files or the command line"
            )
        return key


@dataclass(frozen=True)
class ChatRequest:
    """One structured-JSON question of any task sent through the judge's client (its cache,
    retries, concurrency and budgets): verdicts, feature explanations, detection predictions.

    `parse` turns the message content into a validated answer or raises InvalidAnswer;
    `answer_model` re-validates cached answers (a cache row of another shape is asked again).
    """

    key: Any
    messages: list[dict[str, str]]
    parse: Callable[[str | None], Any]
    answer_model: Any  # a pydantic model class
    schema_name: str
    schema: dict[str, Any]


def judge_request(item: JudgeItem) -> ChatRequest:
    """The judge's own request for one steered/baseline pair."""
    return ChatRequest(key=item.key, messages=build_messages(item), parse=parse_answer, answer_model=JudgeAnswer,
                       schema_name="steering_change_verdict", schema=ANSWER_JSON_SCHEMA)


@dataclass
class JudgeResult:
    """One item's outcome: an answer or an error, never both."""

    key: Any
    model: str
    prompt_hash: str
    answer: Any = None  # a JudgeAnswer for the judge; the request's answer model otherwise
    error: str | None = None
    from_cache: bool = False
    attempts: int = 0
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def on_target(self) -> bool | None:
        return None if self.answer is None else self.answer.on_target_change

    @property
    def off_target(self) -> bool | None:
        return None if self.answer is None else self.answer.off_target_change

    @property
    def label(self) -> str | None:
        return None if self.answer is None else label_of(self.answer.on_target_change, self.answer.off_target_change)

    def evidence(self) -> dict[str, Any]:
        ev: dict[str, Any] = {"prompt_version": PROMPT_VERSION, "from_cache": self.from_cache,
                              "attempts": self.attempts}
        if self.answer is not None:
            a = self.answer
            ev.update(on_target=a.on_target_evidence, off_target=a.off_target_evidence,
                      clinically_coherent=a.clinically_coherent, rationale=a.rationale)
        if self.usage:
            ev["usage"] = self.usage
        return ev

    def verdict_row(self, generation_id: int) -> dict[str, Any]:
        """The `verdicts` row (method "llm_judge") for the store."""
        return dict(
            generation_id=int(generation_id), method="llm_judge", on_target=self.on_target,
            off_target=self.off_target, label=self.label, evidence=self.evidence(),
            judge_model=self.model, prompt_hash=self.prompt_hash, disagreement=None, error=self.error,
        )


@dataclass
class JudgeStats:
    """Counters of one `judge_many` run (what it cost)."""

    items: int = 0
    answers: int = 0  # items that got a valid answer (cached ones included)
    cached: int = 0
    requests: int = 0
    retries: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def add(self, other: JudgeStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class _Budget:
    """Call and token budget shared by all concurrent requests of a run."""

    def __init__(self, max_calls: int | None, max_tokens: int | None, stats: JudgeStats) -> None:
        self.max_calls, self.max_tokens, self.stats = max_calls, max_tokens, stats

    def take_call(self) -> str | None:
        """Reserve one request, or return why the budget forbids it."""
        if self.max_calls is not None and self.stats.requests >= self.max_calls:
            return f"{BUDGET_EXHAUSTED}: max_calls={self.max_calls} requests already sent"
        used = self.stats.prompt_tokens + self.stats.completion_tokens
        if self.max_tokens is not None and used >= self.max_tokens:
            return f"{BUDGET_EXHAUSTED}: {used} of max_tokens={self.max_tokens} tokens used"
        self.stats.requests += 1
        return None


class LLMJudge:
    """Judge many items concurrently; see the module docstring for the guarantees.

    >>> judge = LLMJudge(JudgeConfig(model="gpt-4o-mini", api_key_env="OPENAI_API_KEY"))
    >>> results = judge.judge_many(items, cache=StoreJudgeCache(store))
    """

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config
        self._api_key = config.read_api_key()  # fail early, before any work is done
        self._negotiate = config.response_format == "auto"
        self._response_format: str = "json_schema" if self._negotiate else config.response_format
        self._format_settled = not self._negotiate  # until then, one request at a time probes the server
        self.stats = JudgeStats()  # the last chat_many call
        self.totals = JudgeStats()  # every call of this judge (one command run)
        self.first_error: str | None = None

    @property
    def response_format(self) -> str:
        """The format in use now (after any negotiation in this run)."""
        return self._response_format

    def outcome_line(self) -> str:
        """One line every judge-using command prints: verdicts, errors, what it cost."""
        t = self.totals
        line = (f"judge {self.config.model}: {t.answers} verdicts, {t.errors} errors ({t.requests} requests, "
                f"{t.retries} retries, {t.cached} cached; response format {self._response_format})")
        return line + (f"; e.g. {self.first_error}" if t.errors and self.first_error else "")

    def failure(self) -> str | None:
        """Why the run must exit non-zero: the judge was asked and produced no verdict at all."""
        t = self.totals
        if t.items and not t.answers:
            example = f"; e.g. {self.first_error}" if self.first_error else ""
            return f"the LLM judge produced no verdicts: all {t.items} judge calls failed{example}"
        return None

    def absorb(self, stats: Mapping[str, int], first_error: str | None, response_format: str | None) -> None:
        """Count what copies of this judge did on Ray workers, so that `outcome_line` and
        `failure` speak for the whole run."""
        self.totals.add(JudgeStats(**{k: int(v) for k, v in stats.items()}))
        self.first_error = self.first_error or first_error
        if response_format:
            self._response_format = response_format

    def __repr__(self) -> str:  # never shows the key
        return f"LLMJudge(model={self.config.model!r}, base_url={self.config.base_url!r})"

    # ---- public API -----------------------------------------------------------------------

    def prompt_hash(self, item: JudgeItem) -> str:
        return prompt_hash(build_messages(item), self.config.request_settings())

    def request_hash(self, request: ChatRequest) -> str:
        """The cache key of any request (the judge's items hash exactly as before)."""
        return prompt_hash(request.messages, self.config.request_settings())

    def chat_many(
        self,
        requests: Sequence[ChatRequest],
        *,
        cache: JudgeCache | None = None,
        on_result: Callable[[JudgeResult], None] | None = None,
    ) -> list[JudgeResult]:
        """Blocking wrapper of `achat_many` (results in the order of `requests`)."""
        return asyncio.run(self.achat_many(requests, cache=cache, on_result=on_result))

    def judge_many(
        self,
        items: Sequence[JudgeItem],
        *,
        cache: JudgeCache | None = None,
        on_result: Callable[[JudgeResult], None] | None = None,
    ) -> list[JudgeResult]:
        """Blocking wrapper of `ajudge_many` (results in the order of `items`)."""
        return asyncio.run(self.ajudge_many(items, cache=cache, on_result=on_result))

    def pair_judge(self, cache: JudgeCache | None = None) -> Callable[[Sequence[Any]], list[dict[str, Any]]]:
        """Adapter for `evaluation.labelling.label_pairs(judge=...)`: pairs in (objects with
        baseline, steered, direction, targets and optional target_names, description), one
        verdict mapping per pair out (method "llm_judge"; `error` set when it failed)."""

        def judge_pairs(pairs: Sequence[Any]) -> list[dict[str, Any]]:
            items = [
                JudgeItem(key=i, baseline=p.baseline, steered=p.steered, direction=int(p.direction),
                          targets=tuple(getattr(p, "target_names", ()) or p.targets),
                          description=getattr(p, "description", None) or "")
                for i, p in enumerate(pairs)
            ]
            out = []
            for res in self.judge_many(items, cache=cache):
                row = res.verdict_row(0)
                out.append({k: row[k] for k in ("method", "on_target", "off_target", "label", "evidence",
                                                "judge_model", "prompt_hash", "error")})
            return out

        return judge_pairs

    async def ajudge_many(
        self,
        items: Sequence[JudgeItem],
        *,
        cache: JudgeCache | None = None,
        on_result: Callable[[JudgeResult], None] | None = None,
    ) -> list[JudgeResult]:
        """Judge `items`; `on_result` is called as each finishes (to store it at once)."""
        return await self.achat_many([judge_request(it) for it in items], cache=cache, on_result=on_result)

    async def achat_many(
        self,
        items: Sequence[ChatRequest],
        *,
        cache: JudgeCache | None = None,
        on_result: Callable[[JudgeResult], None] | None = None,
    ) -> list[JudgeResult]:
        """Ask every request; `on_result` is called as each finishes (to store it at once)."""
        import openai  # lazily: reading results never needs the client

        cfg = self.config
        self.stats = stats = JudgeStats(items=len(items))
        results: list[JudgeResult | None] = [None] * len(items)
        # One request per distinct prompt; identical items share the answer.
        by_hash: dict[str, list[int]] = {}
        requests: dict[str, ChatRequest] = {}
        for i, item in enumerate(items):
            h = self.request_hash(item)
            by_hash.setdefault(h, []).append(i)
            requests[h] = item

        def deliver(h: str, template: JudgeResult) -> None:
            for i in by_hash[h]:
                res = JudgeResult(**{**template.__dict__, "key": items[i].key})
                results[i] = res
                if res.error is not None:
                    stats.errors += 1
                    self.first_error = self.first_error or res.error[:300]
                else:
                    stats.answers += 1
                if on_result is not None:
                    on_result(res)

        cached = cache.get_many(cfg.model, by_hash) if cache is not None else {}
        for h, response in cached.items():
            try:
                answer = self._scrub_answer(requests[h].answer_model.model_validate(response["answer"]))
            except Exception:  # a cache row from an older schema: ask again
                continue
            stats.cached += len(by_hash[h])
            deliver(h, JudgeResult(key=None, model=cfg.model, prompt_hash=h, answer=answer, from_cache=True,
                                   usage=dict(response.get("usage") or {})))
        pending = [h for h in by_hash if results[by_hash[h][0]] is None]
        if pending:
            budget = _Budget(cfg.max_calls, cfg.max_tokens, stats)
            sem = asyncio.Semaphore(cfg.concurrency)
            probe = asyncio.Lock()
            client = openai.AsyncOpenAI(api_key=self._api_key, base_url=cfg.base_url, timeout=cfg.timeout_s,
                                        max_retries=0)
            try:
                async def one(h: str) -> None:
                    async with sem:
                        res = None
                        if not self._format_settled:  # negotiate once, not once per concurrent request
                            async with probe:
                                if not self._format_settled:
                                    res = await self._ask(client, openai, h, requests[h], budget)
                        if res is None:
                            res = await self._ask(client, openai, h, requests[h], budget)
                    if res.answer is not None and cache is not None:
                        cache.put(cfg.model, h, {"answer": res.answer.model_dump(), "usage": res.usage})
                    deliver(h, res)

                await asyncio.gather(*(one(h) for h in pending))
            finally:
                await client.close()
        self.totals.add(stats)
        return [r for r in results if r is not None]

    # ---- one request, with retries --------------------------------------------------------

    def _request_kwargs(self, request: ChatRequest, fmt: str,
                        follow_up: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
        cfg = self.config
        messages = [dict(m) for m in request.messages]
        if fmt != "json_schema":  # no server-side schema: the prompt carries it
            rule = schema_instruction(request.schema)
            if messages and messages[0].get("role") == "system":
                messages[0]["content"] = f"{messages[0]['content']}\n\n{rule}"
            else:
                messages.insert(0, {"role": "system", "content": rule})
        kwargs: dict[str, Any] = {"model": cfg.model, "messages": messages + list(follow_up)}
        if cfg.temperature is not None:
            kwargs["temperature"] = cfg.temperature
        if cfg.max_output_tokens is not None:
            kwargs["max_tokens"] = cfg.max_output_tokens
        if fmt == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "strict": True, "schema": request.schema},
            }
        elif fmt == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        return kwargs

    async def _ask(self, client: Any, openai: Any, h: str, request: ChatRequest, budget: _Budget) -> JudgeResult:
        cfg = self.config
        res = JudgeResult(key=None, model=cfg.model, prompt_hash=h)
        retries = invalid = 0
        follow_up: list[dict[str, str]] = []
        while True:
            refusal = budget.take_call()
            if refusal is not None:
                res.error = refusal if res.attempts == 0 else f"{refusal} (after {res.attempts} attempts)"
                return res
            res.attempts += 1
            fmt = self._response_format
            try:
                resp = await asyncio.wait_for(
                    client.chat.completions.create(**self._request_kwargs(request, fmt, follow_up)),
                    timeout=cfg.timeout_s * 2 + 5,
                )
            except (openai.APIConnectionError, openai.APIStatusError, asyncio.TimeoutError) as exc:
                status = getattr(exc, "status_code", None)
                if _rejects_response_format(exc, status) and fmt != "text":
                    if self._negotiate and fmt in _FALLBACK:
                        self._fall_back(fmt, status)
                        continue
                    self._format_settled = True
                    res.error = (f"the judge server refused response_format {fmt} ({self._describe(exc)}); "
                                 f"use response format auto (--judge-response-format auto) to negotiate")
                    return res
                if status is not None and status < 500:
                    self._format_settled = True  # the server answered without refusing the format
                retryable = status is None or status in _RETRYABLE_STATUS or status >= 500
                if not retryable or retries >= cfg.max_retries:
                    tail = f" after {res.attempts} attempts" if res.attempts > 1 else ""
                    res.error = f"{self._describe(exc)}{tail}"
                    return res
                delay = self._backoff(retries, exc)
                retries += 1
                self.stats.retries += 1
                await asyncio.sleep(delay)
                continue
            except openai.OpenAIError as exc:
                res.error = self._describe(exc)
                return res
            self._format_settled = True
            usage = getattr(resp, "usage", None)
            if usage is not None:
                pt, ct = int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
                self.stats.prompt_tokens += pt
                self.stats.completion_tokens += ct
                res.usage = {"prompt_tokens": res.usage.get("prompt_tokens", 0) + pt,
                             "completion_tokens": res.usage.get("completion_tokens", 0) + ct}
            content: str | None = None
            try:
                content = self._content(resp)
                res.answer = self._scrub_answer(request.parse(content))
                return res
            except InvalidAnswer as exc:
                if invalid < cfg.invalid_answer_retries:
                    invalid += 1  # ask again, saying what was wrong (small models often fix it)
                    follow_up = [{"role": "assistant", "content": (content or "")[:4000]}, reask_message(str(exc))]
                    continue
                res.error = f"invalid judge answer: {self._redact(str(exc))}"
                return res

    def _fall_back(self, fmt: str, status: int | None) -> None:
        """Step the run's format down once, however many concurrent requests saw the refusal."""
        if self._response_format == fmt:
            self._response_format = _FALLBACK[fmt]
            log.warning("the judge server refused response_format %s (HTTP %s); using %s for the rest of this run",
                        fmt, status, self._response_format)

    @staticmethod
    def _content(resp: Any) -> str | None:
        choices = getattr(resp, "choices", None) or []
        if not choices:
            raise InvalidAnswer("response has no choices")
        message = choices[0].message
        if getattr(message, "refusal", None):
            raise InvalidAnswer(f"the model refused: {str(message.refusal)[:200]}")
        return message.content

    def _backoff(self, retry: int, exc: BaseException) -> float:
        """Exponential backoff with full jitter, or the server's Retry-After when it gives one."""
        cfg = self.config
        retry_after = _retry_after_seconds(exc)
        if retry_after is not None:
            return min(max(retry_after, 0.0), cfg.backoff_max_s)
        cap = min(cfg.backoff_max_s, cfg.backoff_base_s * (2**retry))
        return random.uniform(cap / 2, cap)  # noqa: S311 - jitter, not cryptography

    def _describe(self, exc: BaseException) -> str:
        status = getattr(exc, "status_code", None)
        if isinstance(exc, asyncio.TimeoutError) or type(exc).__name__ == "APITimeoutError":
            return f"timeout: no answer within {self.config.timeout_s:g} s"
        name = type(exc).__name__
        text = self._redact(str(exc))[:300]
        return f"HTTP {status} {name}: {text}" if status else f"{name}: {text}"

    def _redact(self, text: str) -> str:
        key = self._api_key
        return text.replace(key, "[redacted]") if key and key != "unused" else text

    def _scrub_answer(self, answer: Any) -> Any:
        """An answer whose fields echo the API key is stored with the key redacted (every string field)."""
        key = self._api_key
        if not key or key == "unused" or not hasattr(answer, "model_dump"):
            return answer
        data = answer.model_dump()
        if key not in json.dumps(data, ensure_ascii=False):
            return answer

        def clean(node: Any) -> Any:
            if isinstance(node, str):
                return self._redact(node)
            if isinstance(node, dict):
                return {clean(k): clean(v) for k, v in node.items()}
            if isinstance(node, list):
                return [clean(v) for v in node]
            return node

        return type(answer).model_validate(clean(data))


def _rejects_response_format(exc: BaseException, status: int | None) -> bool:
    """A server's refusal of the requested response_format: OpenAI-style servers say 400/422,
    llama.cpp's server 500 ("Input should be 'text' or 'json_object'"); the body names it."""
    if status not in (400, 422, 500):
        return False
    body = getattr(exc, "body", None)
    text = f"{exc} {json.dumps(body) if body is not None else ''}".lower()
    return "response_format" in text or "json_schema" in text or "input should be 'text'" in text


def _retry_after_seconds(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            import email.utils
            import time

            parsed = email.utils.parsedate_tz(value)
            if parsed is None:
                continue
            seconds = email.utils.mktime_tz(parsed) - time.time()
        if math.isfinite(seconds):
            return seconds
    return None
