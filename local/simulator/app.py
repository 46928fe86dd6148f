"""An OpenAI-compatible chat completions server for local mode, tests and benchmarks.

`POST /v1/chat/completions` answers core/prompt.py's part and combine calls with JSON
following their `response_format`, with verdicts from verdicts.py, wrong on purpose at
the configured rates the way real models are (mistakes.py; noiseless by default);
enforces RPM/TPM like OpenAI (limits.py); can add latency and inject errors at random,
and scripted faults in order (faults.py). Like a model, it stops at `max_tokens` (or
`max_completion_tokens`): a longer answer comes back cut to its first `max_tokens`
tokens, with finish_reason "length" and `completion_tokens` = `max_tokens`. Like OpenAI, it
caches prompt prefixes of 1,024 tokens or more in 128-token steps and reports the hit in
`usage.prompt_tokens_details.cached_tokens` (cache.py says exactly how); cached tokens
still count toward TPM. The response's `service_tier` names the tier that served the call:
"flex" or "priority" when asked, else "default". `GET /_simulator/stats` reports what it
saw: requests, 429s, admitted tokens, calls in flight and their peak, calls of each kind,
cut answers, faults injected, the tokens OpenAI would bill (prompt + completion of
every answered call; a 429 or an injected 500 bills nothing), the cached prompt tokens
among them, the answered calls per served tier, the mistakes made of each
kind and, over answered part calls, the findings of the noiseless verdicts, of the
answers after mistakes, and the line-exact ones among the latter (mistakes.py says how
they are counted: before the scripted fault).

It also serves OpenAI's Files and Batch APIs (`/v1/files`, `/v1/batches`: files.py and
batches.py), each batched request answered by the same code as a synchronous call
(`Simulator.answer_batched`), and counts them in the stats: `files` (uploaded, written,
deleted), `batches` (created, cancel_requests, and each ending: completed, failed, expired,
cancelled) and `batch_requests` (completed, failed, expired, cancelled).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Annotated, Any

import tiktoken
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from core.tokens import ENCODING
from local.simulator import cache, faults, mistakes
from local.simulator.batches import MAX_BYTES, MAX_REQUESTS, Batches, BatchFaultQueue, BatchSettings
from local.simulator.errors import INJECTED_SERVER_ERROR, OpenAIError, invalid_value
from local.simulator.files import FileStore
from local.simulator.limits import Charge, RateLimits
from local.simulator.verdicts import COMBINE, PART, Call, read_call, verdicts

MODEL_NAME = "simulator"
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")  # the values OpenAI's API accepts


@dataclass
class SimulatorConfig:
    rpm: int = 10_000
    tpm: int = 2_000_000
    window_seconds: float = 60.0  # the "minute"; shorter in benchmarks
    latency_seconds: float = 0.02
    rate_limit_rate: float = 0.0  # share of admitted calls answered 429 anyway (upstream overload)
    # Flex (`service_tier: "flex"`): answers take this much longer, and this share of admitted flex
    # calls is answered 429 "resource unavailable" (a lack of capacity, not a rate limit).
    flex_latency_seconds: float = 0.0
    flex_unavailable_rate: float = 0.0
    error_rate: float = 0.0  # share answered 500
    send_retry_after: bool = True
    seed: int | None = None
    faults: list[str] = field(default_factory=list)  # scripted faults, in order (faults.py)
    api_key: str | None = None  # when set, a call without `Authorization: Bearer <api_key>` is 401, as OpenAI answers
    # Mistakes on purpose (mistakes.py): the chance of each, per text finding (invent: per call).
    misnumber_rate: float = 0.0
    invent_rate: float = 0.0
    miss_rate: float = 0.0
    respace_rate: float = 0.0
    mistake_seed: int = 0  # mixed into every call's draws; the draws never depend on `seed`
    # Prompt caching (cache.py): an entry expires this long after its last use; at most this many kept (LRU).
    prompt_cache_ttl_seconds: float = cache.DEFAULT_TTL_SECONDS
    prompt_cache_max_entries: int = cache.DEFAULT_MAX_ENTRIES
    # The Batch API (batches.py): a batch's time from creation to `completed`, its limits, its failures.
    batch_completion_seconds: float = 5.0
    batch_max_requests: int = MAX_REQUESTS  # OpenAI's 50,000 requests...
    batch_max_bytes: int = MAX_BYTES  # ...and 200 MB per input file
    batch_enqueued_token_limit: int | None = None  # per model, over the batches in progress; None: no limit
    batch_failure_rate: float = 0.0  # share of batched requests answered 500, drawn per custom_id
    batch_failed_custom_ids: list[str] = field(default_factory=list)  # answered 500 in every batch
    # Scripted batch faults, one per created batch, in order: expire, expire/<N>, malformed_output.
    batch_faults: list[str] = field(default_factory=list)

    def batch_settings(self) -> BatchSettings:
        """The settings a batch created now keeps; ValueError when one is out of range."""
        settings = BatchSettings(
            self.batch_completion_seconds,
            self.batch_max_requests,
            self.batch_max_bytes,
            self.batch_enqueued_token_limit,
            self.batch_failure_rate,
            frozenset(self.batch_failed_custom_ids),
        )
        settings.check()
        return settings

    def mistake_rates(self) -> mistakes.Rates:
        """The mistakes' rates and seed; ValueError when a rate is outside 0.0-1.0."""
        return mistakes.Rates(
            self.misnumber_rate, self.invent_rate, self.miss_rate, self.respace_rate, self.mistake_seed
        )


_MISTAKE_FIELDS = frozenset({"misnumber_rate", "invent_rate", "miss_rate", "respace_rate", "mistake_seed"})
_CACHE_FIELDS = frozenset({"prompt_cache_ttl_seconds", "prompt_cache_max_entries"})


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    rate_limited: int = 0
    errors: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    admitted: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, tokens charged)
    started: list[float] = field(default_factory=list)
    part_calls: int = 0  # answered calls of each kind
    combine_calls: int = 0
    cut_answers: int = 0  # finish_reason "length"
    faults_injected: int = 0
    billed_tokens: int = 0  # prompt + completion tokens of answered calls
    cached_prompt_tokens: int = 0  # of those prompt tokens, the ones served from the prompt cache
    flex_unavailable: int = 0  # flex calls answered 429 "resource unavailable"
    served_tiers: dict[str, int] = field(default_factory=dict)  # answered calls per response `service_tier`
    unauthorized: int = 0  # calls refused for a missing or wrong key (401)
    mistakes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(mistakes.KINDS, 0))
    truth_findings: int = 0  # over answered part calls: the noiseless verdicts' findings,
    emitted_findings: int = 0  # the findings after mistakes (before the scripted fault),
    exact_findings: int = 0  # and those of them at a noiseless finding's lines, not invented
    # The Files and Batch APIs (the module's docstring says what each counts).
    files: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("uploaded", "written", "deleted"), 0))
    batches: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("created", "cancel_requests", "completed", "failed", "expired", "cancelled"), 0
        )
    )
    batch_requests: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("completed", "failed", "expired", "cancelled"), 0)
    )

    def count(self, table: str, key: str) -> None:
        """One more `key` in the `files`, `batches` or `batch_requests` counts."""
        with self.lock:
            counts: dict[str, int] = getattr(self, table)
            counts[key] += 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "rate_limited": self.rate_limited,
                "errors": self.errors,
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "admitted_tokens": sum(t for _, t in self.admitted),
                "part_calls": self.part_calls,
                "combine_calls": self.combine_calls,
                "cut_answers": self.cut_answers,
                "faults_injected": self.faults_injected,
                "billed_tokens": self.billed_tokens,
                "cached_prompt_tokens": self.cached_prompt_tokens,
                "flex_unavailable": self.flex_unavailable,
                "served_tiers": dict(self.served_tiers),
                "unauthorized": self.unauthorized,
                "mistakes": dict(self.mistakes),
                "truth_findings": self.truth_findings,
                "emitted_findings": self.emitted_findings,
                "exact_findings": self.exact_findings,
                "files": dict(self.files),
                "batches": dict(self.batches),
                "batch_requests": dict(self.batch_requests),
            }


def _resource_unavailable() -> JSONResponse:
    """OpenAI's answer when flex has no capacity: 429 without rate-limit headers or retry-after."""
    return JSONResponse(
        {
            "error": {
                "message": "Resource unavailable: no capacity for flex processing right now. "
                "Retry later, or send the request with the default service tier.",
                "type": "resource_unavailable",
                "param": None,
                "code": "resource_unavailable",
            }
        },
        status_code=429,
    )


def served_tier(requested: str | None) -> str:
    """The response's `service_tier` for the request's: "default" when it asks none, "auto" or "default"."""
    return "default" if requested in (None, "auto", "default") else str(requested)


@dataclass(frozen=True)
class Admitted:
    """An admitted call: its prompt tokens, those of them served from the cache, its `max_tokens`, its served tier."""

    prompt_tokens: int
    cached_tokens: int
    max_tokens: int
    tier: str


class Simulator:
    def __init__(self, config: SimulatorConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """`clock`: the time of the prompt cache's expiry and of the batches' timelines (tests pass their own)."""
        self.config = config or SimulatorConfig()
        self.config.mistake_rates()  # a bad rate or batch setting fails here, not at the first call
        self.config.batch_settings()
        self.prompt_cache = cache.PromptCache(
            self.config.prompt_cache_ttl_seconds, self.config.prompt_cache_max_entries, clock
        )
        self.limits = RateLimits(self.config.rpm, self.config.tpm, self.config.window_seconds)
        self.stats = Stats()
        self.faults = faults.FaultQueue(self.config.faults)
        self.files = FileStore(self.stats.count)
        self.batches = Batches(
            self.files,
            lambda body: self.answer_batched(body),  # through the attribute, so a wrapper (tally.py) sees them
            self.stats.count,
            self.config.batch_settings,
            BatchFaultQueue(self.config.batch_faults),
            clock,
        )
        self._random = random.Random(self.config.seed)

    def reconfigure(self, **changes: Any) -> None:
        """Change config fields; a bad fault entry or mistake rate raises before anything changes.
        Only a change of `seed` re-seeds the random errors; the mistakes are seeded per call."""
        unknown = sorted(changes.keys() - {f.name for f in fields(self.config)})
        if unknown:
            raise ValueError(f"unknown simulator setting(s): {', '.join(unknown)}")
        mistaken = {name: changes[name] for name in changes if name in _MISTAKE_FIELDS}
        if mistaken:
            replace(self.config, **mistaken).mistake_rates()
        cache_settings = replace(self.config, **{k: v for k, v in changes.items() if k in _CACHE_FIELDS})
        cache.check_settings(cache_settings.prompt_cache_ttl_seconds, cache_settings.prompt_cache_max_entries)
        replace(self.config, **{k: v for k, v in changes.items() if k.startswith("batch_")}).batch_settings()
        if "batch_faults" in changes:  # checked in full before either queue is replaced
            BatchFaultQueue(changes["batch_faults"])
        if "faults" in changes:  # replaces the queue; a bad entry raises before anything changes
            self.faults.replace(changes["faults"])
            changes["faults"] = list(changes["faults"])
        if "batch_faults" in changes:
            self.batches.faults.replace(changes["batch_faults"])
            changes["batch_faults"] = list(changes["batch_faults"])
        for name, value in changes.items():
            setattr(self.config, name, value)
        if changes.keys() & {"rpm", "tpm", "window_seconds"}:  # fresh (full) buckets only when a limit changes
            self.limits = RateLimits(self.config.rpm, self.config.tpm, self.config.window_seconds)
        if "seed" in changes:
            self._random = random.Random(self.config.seed)
        if changes.keys() & _CACHE_FIELDS:  # the entries stay; the least recently used go past a lower cap
            self.prompt_cache.configure(self.config.prompt_cache_ttl_seconds, self.config.prompt_cache_max_entries)

    def check_key(self, authorization: str | None) -> None:
        """OpenAI's 401 for a missing or wrong key (echoed masked, as OpenAI does), raised as OpenAIError."""
        if self.config.api_key is None or authorization == f"Bearer {self.config.api_key}":
            return
        with self.stats.lock:
            self.stats.unauthorized += 1
        given = (authorization or "").removeprefix("Bearer ")
        masked = f"{given[:3]}*****{given[-4:]}" if len(given) > 8 else "*****"
        message = f"Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
        raise OpenAIError(401, message, code="invalid_api_key")

    def reset_peak(self) -> None:
        with self.stats.lock:
            self.stats.peak_in_flight = self.stats.in_flight

    async def complete(self, body: dict[str, Any]) -> JSONResponse:
        refused = refusal(body)
        if refused is not None:  # refused before any limit, as OpenAI does
            return JSONResponse(refused.body(), refused.status_code)
        tier = served_tier(body.get("service_tier"))
        charge = Charge.of(body)
        decision = self.limits.admit(charge.tokens)
        with self.stats.lock:
            self.stats.requests += 1
            if not decision.admitted:
                self.stats.rate_limited += 1
        if not decision.admitted:
            return self._rate_limited(
                decision.limited_by or "tokens", decision.retry_after, decision.headers, charge.tokens
            )
        with self.stats.lock:
            now = time.monotonic()
            self.stats.admitted.append((now, charge.tokens))
            self.stats.started.append(now)
            self.stats.in_flight += 1
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
        try:
            flex = tier == "flex"
            await asyncio.sleep(self.config.latency_seconds + (self.config.flex_latency_seconds if flex else 0.0))
            if flex and self._random.random() < self.config.flex_unavailable_rate:
                with self.stats.lock:
                    self.stats.flex_unavailable += 1
                return _resource_unavailable()
            draw = self._random.random()
            if draw < self.config.rate_limit_rate:
                with self.stats.lock:
                    self.stats.rate_limited += 1
                return self._rate_limited("tokens", 1.0, decision.headers, charge.tokens)
            if draw < self.config.rate_limit_rate + self.config.error_rate:
                with self.stats.lock:
                    self.stats.errors += 1
                return JSONResponse(INJECTED_SERVER_ERROR.body(), INJECTED_SERVER_ERROR.status_code)
            return JSONResponse(self._answer(body, charge, tier), headers=decision.headers)
        finally:
            with self.stats.lock:
                self.stats.in_flight -= 1

    def answer_batched(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(status code, body) of a batched request: what `complete` answers the same body, by the same code,
        without the rate limits, the latency or the injected 429s and 500s (a batch has none of them)."""
        refused = refusal(body)
        if refused is not None:
            return refused.status_code, refused.body()
        return 200, self._answer(body, Charge.of(body), served_tier(body.get("service_tier")))

    def _cached_tokens(self, body: dict[str, Any], prompt_tokens: int) -> int:
        """The prompt's tokens served from the prompt cache, which then holds its prefixes (cache.py)."""
        if prompt_tokens < cache.MIN_PREFIX:  # OpenAI's roles make the sequence prompt_tokens long: none cacheable
            return 0
        return self.prompt_cache.serve(str(body.get("model", "")), cache.prompt_tokens(body.get("messages") or []))

    def _answer(self, body: dict[str, Any], charge: Charge, tier: str) -> dict[str, Any]:
        """The answer to an admitted call, counted in the stats: verdicts, mistakes, the scripted fault, the cache."""
        admitted = Admitted(
            charge.prompt_tokens, self._cached_tokens(body, charge.prompt_tokens), charge.max_tokens, tier
        )
        call = read_call(body)
        truth = verdicts(call)
        made = mistakes.make(self.config.mistake_rates(), call, truth)
        fault = self.faults.take(call.kind)
        content, completion_tokens, finish_reason = answer(call, fault, admitted.max_tokens, made.results)
        with self.stats.lock:
            if call.kind == COMBINE:
                self.stats.combine_calls += 1
            else:
                self.stats.part_calls += 1
            for kind, count in made.counts.items():
                self.stats.mistakes[kind] += count
            if call.kind == PART:
                truth_findings, emitted, exact = made.scores(truth)
                self.stats.truth_findings += truth_findings
                self.stats.emitted_findings += emitted
                self.stats.exact_findings += exact
            self.stats.cut_answers += finish_reason == "length"
            self.stats.faults_injected += fault is not None
            self.stats.billed_tokens += admitted.prompt_tokens + completion_tokens
            self.stats.cached_prompt_tokens += admitted.cached_tokens
            self.stats.served_tiers[admitted.tier] = self.stats.served_tiers.get(admitted.tier, 0) + 1
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            # The model asked, as OpenAI names the one that served a request (there: a dated snapshot of it).
            "model": str(body.get("model") or MODEL_NAME),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
            ],
            "usage": {
                "prompt_tokens": admitted.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": admitted.prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": admitted.cached_tokens},
            },
            "service_tier": admitted.tier,
        }

    def _rate_limited(
        self, limited_by: str, retry_after: float, headers: dict[str, str], requested: int
    ) -> JSONResponse:
        limit = self.config.tpm if limited_by == "tokens" else self.config.rpm
        unit = "tokens per min (TPM)" if limited_by == "tokens" else "requests per min (RPM)"
        if self.config.send_retry_after:
            headers = {**headers, "retry-after": f"{max(retry_after, 0.001):.3f}"}
        message = (
            f"Rate limit reached for {MODEL_NAME} on {unit}: Limit {limit}, Requested {requested}. "
            f"Please try again in {retry_after:.3f}s."
        )
        return JSONResponse(
            {"error": {"message": message, "type": limited_by, "param": None, "code": "rate_limit_exceeded"}},
            status_code=429,
            headers=headers,
        )


def refusal(body: dict[str, Any]) -> OpenAIError | None:
    """What OpenAI refuses in a chat completion request before any limit: an unknown `service_tier`,
    `messages` not an array of objects, a `max_tokens` / `max_completion_tokens` not an integer."""
    requested_tier = body.get("service_tier")
    if requested_tier is not None and requested_tier not in SERVICE_TIERS:
        return invalid_value("service_tier", requested_tier, SERVICE_TIERS)
    messages = body.get("messages")
    if messages is not None and not (isinstance(messages, list) and all(isinstance(m, dict) for m in messages)):
        return _invalid_type("messages", "an array of objects")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return _invalid_type(name, "an integer")
    return None


def _invalid_type(param: str, expected: str) -> OpenAIError:
    return OpenAIError(400, f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type")


def answer(
    call: Call, fault: str | None, max_tokens: int, results: list[dict[str, Any]] | None = None
) -> tuple[str, int, str]:
    """(content, completion_tokens, finish_reason) of the answer to a call, with its scripted fault;
    `results` the verdicts before the fault (the noiseless ones when None)."""
    content = json.dumps({"results": faults.apply(fault, call, verdicts(call) if results is None else results)})
    if fault == faults.MALFORMED:
        content = faults.MALFORMED_PREFIX + content
    encoding = tiktoken.get_encoding(ENCODING)  # core.tokens' encoding, cached by tiktoken
    tokens = encoding.encode(content, disallowed_special=())
    limit = min(max_tokens, faults.cut_point(len(tokens))) if fault == faults.CUT else max_tokens
    if len(tokens) > limit:  # a model stops at max_tokens, mid-answer
        return encoding.decode(tokens[:limit]), limit, "length"
    return content, len(tokens), "stop"


def create_simulator_app(simulator: Simulator) -> FastAPI:
    app = FastAPI(title="OpenAI-compatible simulator", docs_url=None, redoc_url=None)

    @app.exception_handler(OpenAIError)
    async def openai_error(_: Request, error: OpenAIError) -> JSONResponse:
        return JSONResponse(error.body(), error.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        """A parameter of the wrong type (a `limit` not a number): OpenAI's 400, not FastAPI's 422."""
        first = error.errors()[0] if error.errors() else {}
        param = str(first.get("loc", ["", ""])[-1])
        refused = OpenAIError(400, f"Invalid '{param}': {first.get('msg', 'invalid')}.", param=param)
        return JSONResponse(refused.body(), refused.status_code)

    def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        simulator.check_key(authorization)

    def advance() -> None:
        """Every batch step due by now taken (batches.py): a batch moves when the Files or Batches API is called."""
        simulator.batches.advance()

    Authorized = Depends(authorized)
    Advanced = [Authorized, Depends(advance)]  # the Files and Batches routes

    @app.post("/v1/chat/completions", dependencies=[Authorized])
    async def chat_completions(request: Request) -> JSONResponse:
        return await simulator.complete(await request.json())

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "owned_by": "simulator"}]}

    @app.post("/v1/files", dependencies=Advanced)
    async def upload_file(request: Request) -> dict[str, Any]:
        """Upload a batch input file (multipart `file`, `purpose` "batch")."""
        form = await request.form()
        upload, purpose = form.get("file"), form.get("purpose")
        content = await upload.read() if upload is not None and not isinstance(upload, str) else None
        filename = getattr(upload, "filename", None)
        stored = simulator.files.upload(
            filename, purpose if isinstance(purpose, str) else None, content, int(time.time())
        )
        return stored.to_object()

    @app.get("/v1/files/{file_id}", dependencies=Advanced)
    async def get_file(file_id: str) -> dict[str, Any]:
        """A file's File object."""
        return simulator.files.get(file_id).to_object()

    @app.get("/v1/files/{file_id}/content", dependencies=Advanced)
    async def file_content(file_id: str) -> Response:
        """A file's bytes."""
        return Response(simulator.files.get(file_id).content, media_type="application/octet-stream")

    @app.delete("/v1/files/{file_id}", dependencies=Advanced)
    async def delete_file(file_id: str) -> dict[str, Any]:
        """Delete a file."""
        return simulator.files.delete(file_id)

    @app.post("/v1/batches", dependencies=Advanced)
    async def create_batch(request: Request) -> dict[str, Any]:
        """Create a batch from an uploaded input file."""
        try:
            body = await request.json()
        except ValueError as error:
            raise OpenAIError(400, "The request body is not valid JSON.") from error
        if not isinstance(body, dict):
            raise OpenAIError(400, "The request body must be a JSON object.")
        return simulator.batches.create(body)

    @app.get("/v1/batches/{batch_id}", dependencies=Advanced)
    async def get_batch(batch_id: str) -> dict[str, Any]:
        """A batch's Batch object."""
        return simulator.batches.get(batch_id)

    @app.post("/v1/batches/{batch_id}/cancel", dependencies=Advanced)
    async def cancel_batch(batch_id: str) -> dict[str, Any]:
        """Cancel a batch: `cancelling`, then `cancelled` with the answers made before."""
        return simulator.batches.cancel(batch_id)

    @app.get("/v1/batches", dependencies=Advanced)
    async def list_batches(after: str | None = None, limit: Annotated[int | None, Query()] = None) -> dict[str, Any]:
        """The batches, newest first, a page at a time."""
        return simulator.batches.page(after, limit)

    @app.get("/_simulator/stats")
    async def stats() -> dict[str, Any]:
        return simulator.stats.snapshot()

    return app
