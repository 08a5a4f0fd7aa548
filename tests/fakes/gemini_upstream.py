"""A fake of the Gemini API (Google AI Studio, generativelanguage.googleapis.com) on loopback.

Wire format as Google's servers speak it (checked against the `google-genai` SDK):

* ``POST /v1beta/models`` (and ``/v1/models``, the SDK's default)/{model}:generateContent`` → a GenerateContentResponse;
  ``:streamGenerateContent?alt=sse`` → SSE events (``data: {GenerateContentResponse}\\r\\n\\r\\n``,
  no terminator: the stream ends when the answer has a finishReason); without ``alt=sse`` the
  whole answer as one JSON array.
* ``:embedContent`` → ``{"embedding": {"values"}}``; ``:batchEmbedContents`` → ``{"embeddings"}``
  (each request's ``model`` must be ``models/{model}``).
* Auth: ``x-goog-api-key`` header (a ``key`` query parameter is accepted, as Google does, and
  recorded so tests can assert it was never used). No key → 403 PERMISSION_DENIED; a wrong key →
  400 INVALID_ARGUMENT with ErrorInfo reason API_KEY_INVALID, as the real API answers.
* Errors: ``{"error": {"code", "message", "status", "details"}}``; unknown top-level fields of a
  generateContent body are rejected like Google's "Unknown name" 400.

Answers come from the OpenAI fake's provider-neutral brain: the native request is translated to an
OpenAI-shaped body, planned by ``plan_chat`` and rendered in Gemini's format. Scenarios by model
name: error-<status>, slow-stream, midstream-drop, garbage (see ``openai_upstream.Scenario``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Final

import orjson
from aiohttp import web

from tests.fakes.openai_upstream import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    MIDSTREAM_DROP_AFTER,
    REQUEST_ID,
    REQUEST_JSON,
    RETRY_AFTER_S,
    SLOW_STREAM_DELAY_S,
    SLOW_STREAM_WORDS,
    ChatPlan,
    FakeOpenAI,
    Handler,
    JSONDict,
    RecordedRequest,
    Scenario,
    embedding_vector,
    new_id,
    plan_chat,
    word_pieces,
)

GOOGLE_STATUS: Final = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "models/{model} is not found for API version v1beta."),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in the troubleshooting guide."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}
FINISH: Final = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
GENERATE_FIELDS: Final = frozenset(
    {
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "generationConfig",
        "safetySettings",
        "cachedContent",
    }
)
MODEL_VERSION: Final = "gemini-fake-001"


def google_error(
    status: int,
    message: str | None = None,
    headers: dict[str, str] | None = None,
    details: list[Any] | None = None,
) -> web.Response:
    name, default = GOOGLE_STATUS.get(status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", ""))
    error: JSONDict = {
        "code": status,
        "message": message or default or f"Simulated error {status}.",
        "status": name,
    }
    if details:
        error["details"] = details
    return web.Response(
        status=status, body=orjson.dumps({"error": error}), content_type="application/json", headers=headers
    )


def scenario_error(status: int, model: str) -> web.Response:
    message = GOOGLE_STATUS.get(status, ("", ""))[1].format(model=model) or None
    if status != 429:
        return google_error(status, message)
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{RETRY_AFTER_S}s"}
    return google_error(status, message, {"retry-after": RETRY_AFTER_S}, [retry])


# --------------------------------------------------------------------------------------------------
# Gemini request → the OpenAI-shaped body the brain plans from


def lower_types(schema: Any) -> Any:
    """Gemini schemas may spell types in upper case (OBJECT, STRING); the brain wants JSON Schema."""
    if isinstance(schema, list):
        return [lower_types(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        k: (v.lower() if k == "type" and isinstance(v, str) else lower_types(v)) for k, v in schema.items()
    }


def _field(obj: Any, camel: str) -> Any:
    """A field by its camelCase name or its snake_case one (Google accepts both in JSON)."""
    if not isinstance(obj, dict):
        return None
    snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return obj.get(camel, obj.get(snake))


def _response_text(response: Any) -> str:
    if isinstance(response, dict) and isinstance(response.get("content"), str) and len(response) == 1:
        return response["content"]
    return orjson.dumps(response).decode()


def gemini_to_openai(native: JSONDict, model: str) -> JSONDict:
    messages: list[JSONDict] = []
    system = _field(native, "systemInstruction")
    if isinstance(system, dict):
        text = " ".join(p["text"] for p in system.get("parts") or [] if isinstance(p.get("text"), str))
        messages.append({"role": "system", "content": text})
    for content in native.get("contents") or []:
        role = content.get("role", "user")
        parts = content.get("parts") or []
        texts, calls, results = [], [], []
        for part in parts:
            if isinstance(part.get("text"), str):
                texts.append({"type": "text", "text": part["text"]})
            elif _field(part, "inlineData") or _field(part, "fileData"):
                texts.append({"type": "image_url", "image_url": {"url": "inline"}})
            elif isinstance(call := _field(part, "functionCall"), dict):
                arguments = orjson.dumps(call.get("args") or {}).decode()
                calls.append(
                    {
                        "id": new_id("call_", 24),
                        "type": "function",
                        "function": {"name": call["name"], "arguments": arguments},
                    }
                )
            elif isinstance(result := _field(part, "functionResponse"), dict):
                results.append(
                    {"role": "tool", "tool_call_id": "x", "content": _response_text(result.get("response"))}
                )
        if role == "model":
            messages.append(
                {"role": "assistant", "content": texts or None, **({"tool_calls": calls} if calls else {})}
            )
        elif results:
            messages.extend(results)
        else:
            messages.append({"role": "user", "content": texts})
    body: JSONDict = {"model": model, "messages": messages}
    declarations = [
        d for tool in native.get("tools") or [] for d in _field(tool, "functionDeclarations") or []
    ]
    if declarations:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": d["name"], "parameters": lower_types(d.get("parameters") or {})},
            }
            for d in declarations
        ]
        config = _field(_field(native, "toolConfig"), "functionCallingConfig") or {}
        mode = config.get("mode", "AUTO")
        allowed = _field(config, "allowedFunctionNames") or []
        if mode == "NONE":
            body["tool_choice"] = "none"
        elif mode == "ANY":
            body["tool_choice"] = (
                {"type": "function", "function": {"name": allowed[0]}} if len(allowed) == 1 else "required"
            )
    generation = _field(native, "generationConfig") or {}
    for camel, key in (("maxOutputTokens", "max_tokens"), ("stopSequences", "stop"), ("candidateCount", "n")):
        if _field(generation, camel) is not None:
            body[key] = _field(generation, camel)
    if _field(generation, "responseMimeType") == "application/json":
        schema = _field(generation, "responseSchema") or _field(generation, "responseJsonSchema")
        body["response_format"] = (
            {"type": "json_schema", "json_schema": {"name": "out", "schema": lower_types(schema)}}
            if schema
            else {"type": "json_object"}
        )
    return body


# --------------------------------------------------------------------------------------------------
# Rendering a plan in Gemini's format


class Rendered:
    def __init__(self, plan: ChatPlan) -> None:
        self.plan = plan
        self.response_id = new_id("", 22)

    def usage(self, final: bool) -> JSONDict:
        prompt = self.plan.prompt_tokens
        completion = self.plan.completion_tokens() if final else 0
        usage: JSONDict = {"promptTokenCount": prompt, "totalTokenCount": prompt + completion}
        if final:
            usage["candidatesTokenCount"] = completion
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
        return usage

    def envelope(self, candidates: list[JSONDict], final: bool) -> JSONDict:
        return {
            "candidates": candidates,
            "usageMetadata": self.usage(final),
            "modelVersion": MODEL_VERSION,
            "responseId": self.response_id,
        }

    def call_parts(self, index: int) -> list[JSONDict]:
        return [
            {"functionCall": {"name": c.name, "args": orjson.loads(c.arguments)}}
            for c in self.plan.tool_calls[index]
        ]

    def response(self) -> JSONDict:
        candidates = []
        for index in range(self.plan.n):
            parts = self.call_parts(index) if self.plan.tool_calls else [{"text": self.plan.reply_text or ""}]
            candidates.append(
                {
                    "content": {"parts": parts, "role": "model"},
                    "finishReason": FINISH[self.plan.finish_reason],
                    "index": index,
                }
            )
        return self.envelope(candidates, True)

    def events(self) -> Iterator[JSONDict]:
        """One event per word (all calls in one event); the last carries finishReason and usage."""
        n = self.plan.n
        if self.plan.tool_calls:
            steps = [[self.call_parts(i) for i in range(n)]]
        else:
            steps = [[[{"text": piece}]] * n for piece in word_pieces(self.plan.reply_text or "")] or [
                [[{"text": ""}]] * n
            ]
        finish = FINISH[self.plan.finish_reason]
        for position, step in enumerate(steps):
            last = position == len(steps) - 1
            candidates = []
            for index, parts in enumerate(step):
                candidate: JSONDict = {"content": {"parts": parts, "role": "model"}, "index": index}
                if last:
                    candidate["finishReason"] = finish
                candidates.append(candidate)
            yield self.envelope(candidates, last)


def sse(payload: JSONDict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


# --------------------------------------------------------------------------------------------------
# The server


class FakeGemini(FakeOpenAI):
    """The Gemini API on loopback; ``start()`` serves it from a background thread."""

    def __init__(self, api_key: str = "AIzaFakeGeminiKey0000000000000000000000", **kwargs: Any) -> None:
        super().__init__(api_key, **kwargs)
        self.requests: list[RecordedRequest] = []

    async def start_async(self, backlog: int = 128) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._google_middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1beta/models/{target}", self._dispatch)
        app.router.add_post("/v1/models/{target}", self._dispatch)  # the stable version, same shapes
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=backlog)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}"

    @web.middleware
    async def _google_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = new_id("", 22)
        body = await request.read()
        parsed: Any = None
        if body:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                parsed = None
        request[REQUEST_JSON] = parsed
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(
            RecordedRequest(request.method, request.path, request.query_string, headers, body, parsed)
        )
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return google_error(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if key != self.api_key:
            info = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
            }
            return google_error(400, "API key not valid. Please pass a valid API key.", details=[info])
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return google_error(404, f"Invalid URL ({request.method} {request.path})")

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["target"].partition(":")
        native = request[REQUEST_JSON]
        if not isinstance(native, dict):
            return google_error(400, "Invalid JSON payload received.")
        scenario = Scenario.for_model(model)
        if scenario.error_status is not None:
            return scenario_error(scenario.error_status, model)
        if method in ("generateContent", "streamGenerateContent"):
            return await self._generate(request, model, native, scenario, method == "streamGenerateContent")
        if method in ("embedContent", "batchEmbedContents"):
            return self._embed(model, native, method)
        return google_error(404, f"Method {method} not found.")

    async def _generate(
        self, request: web.Request, model: str, native: JSONDict, scenario: Scenario, streaming: bool
    ) -> web.StreamResponse:
        unknown = sorted(set(native) - GENERATE_FIELDS)
        if unknown:
            return google_error(
                400, f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
            )
        if not native.get("contents"):
            return google_error(400, "* GenerateContentRequest.contents: contents is not specified\n")
        sse_mode = request.query.get("alt") == "sse"
        if scenario.garbage:
            body = (
                b"data: <html>upstream garbage, not JSON\r\n\r\n"
                if streaming and sse_mode
                else b"<html>garbage"
            )
            return web.Response(
                status=200, body=body, content_type="text/event-stream" if sse_mode else "application/json"
            )
        body = gemini_to_openai(native, model)
        plan = plan_chat(body, model, SLOW_STREAM_WORDS if scenario.slow_stream else None)
        rendered = Rendered(plan)
        if not streaming:
            return web.json_response(rendered.response(), dumps=lambda v: orjson.dumps(v).decode())
        if not sse_mode:
            return web.json_response(list(rendered.events()), dumps=lambda v: orjson.dumps(v).decode())
        return await self._sse(
            request,
            model,
            rendered.events(),
            delay=SLOW_STREAM_DELAY_S if scenario.slow_stream else 0.0,
            drop_after=MIDSTREAM_DROP_AFTER if scenario.midstream_drop else None,
        )

    async def _sse(
        self,
        request: web.Request,
        model: str,
        events: Iterator[JSONDict],
        *,
        delay: float,
        drop_after: int | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for sent, event in enumerate(events):
                if drop_after is not None and sent >= drop_after:
                    self._abort(request)
                    return response
                if delay and await self._pause(delay):
                    self._abort(request)
                    return response
                if self._client_gone(request):
                    raise ConnectionResetError("the client went away")
                await response.write(sse(event))
            await response.write_eof()
        except ConnectionError:
            self._record_cancel(model, request[REQUEST_ID])
        except asyncio.CancelledError:
            if not self._is_stopping:
                self._record_cancel(model, request[REQUEST_ID])
            raise
        return response

    def _embed(self, model: str, native: JSONDict, method: str) -> web.Response:
        if Scenario.for_model(model).garbage:
            return web.Response(status=200, body=b"<html>garbage", content_type="application/json")
        if method == "embedContent":
            items = [native]
        else:
            items = native.get("requests") or []
            if not items:
                return google_error(400, "* BatchEmbedContentsRequest.requests: requests is required\n")
            for item in items:
                if item.get("model") != f"models/{model}":
                    return google_error(
                        400,
                        f"Model name in request ({item.get('model')}) must match the model in the URL (models/{model}).",
                    )
        vectors = []
        tokens = 0
        for item in items:
            parts = (item.get("content") or {}).get("parts") or []
            text = " ".join(p.get("text", "") for p in parts if isinstance(p, dict))
            if not text:
                return google_error(400, "* EmbedContentRequest.content: contents is not specified\n")
            tokens += len(text.split())
            dims = _field(item, "outputDimensionality") or DEFAULT_EMBEDDING_DIMENSIONS
            vectors.append({"values": embedding_vector(text.encode(), int(dims))})
        payload: JSONDict = {"embedding": vectors[0]} if method == "embedContent" else {"embeddings": vectors}
        payload["usageMetadata"] = {"promptTokenCount": tokens, "totalTokenCount": tokens}
        return web.json_response(payload, dumps=lambda v: orjson.dumps(v).decode())
