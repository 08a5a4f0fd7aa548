"""A fake of Anthropic's Messages API on loopback, speaking its real wire format.

``POST /v1/messages`` with ``x-api-key`` (or ``Authorization: Bearer``, as recent official SDKs send)
and a required ``anthropic-version`` header. The native request is translated into an OpenAI-shaped
body for the shared brain of ``tests.fakes.openai_upstream`` (``plan_chat``), and the plan is
rendered as an Anthropic message or as Anthropic's named SSE events (message_start,
content_block_start/delta/stop, message_delta, message_stop, ping). Like the real API it rejects
unknown top-level fields, a missing ``max_tokens`` and malformed content blocks with a 400.

An assistant turn at the end of ``messages`` is a prefill: the model continues it (a ``{`` prefill
makes the brain answer in JSON, and the reply leaves the prefill out, as Claude does).

Scenarios by model name: those of ``Scenario`` (error-<status> with Anthropic's error body, 429 with
``retry-after: 7``, 529 ``overloaded_error``; slow-stream; midstream-drop; garbage) plus
``overloaded-midstream`` (a few events, some text) and ``overloaded-early`` (message_start and a ping),
then an ``error`` event of type ``overloaded_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Final

import orjson
from aiohttp import web

from tests.fakes.openai_upstream import (
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
    plan_chat,
    reply_text,
    stop_sequences,
    word_pieces,
)

MIDSTREAM_DROP_AFTER: Final = 5
OVERLOADED_AFTER: Final = {"overloaded-midstream": 4, "overloaded-early": 2}
"""Events sent before an ``error`` event of type ``overloaded_error``, by model name."""
KNOWN_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "service_tier",
        "output_config",
        "container",
        "mcp_servers",
        "context_management",
        "inference_geo",
        "cache_control",
        "speed",
        "diagnostics",
        "user_profile_id",
        "workspace_id",
    }
)
ERROR_TYPES: Final = {
    400: ("invalid_request_error", "Invalid request (simulated by the fake upstream)."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: {model}"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def error_response(
    status: int, type_: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_fake"}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def invalid(message: str) -> web.Response:
    return error_response(400, "invalid_request_error", message)


def scenario_error(status: int, model: str) -> web.Response:
    type_, message = ERROR_TYPES.get(status, ("api_error" if status >= 500 else "invalid_request_error", ""))
    headers = {"retry-after": RETRY_AFTER_S} if status == 429 else None
    return error_response(status, type_, message.format(model=model) or f"Simulated error {status}.", headers)


def event(name: str, payload: JSONDict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


# --------------------------------------------------------------------------------------------------
# Native request → OpenAI-shaped body for the brain


class Invalid(Exception):
    pass


def _blocks(content: Any, where: str) -> list[JSONDict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise Invalid(f"{where}.content: Input should be a valid string or list")
    for i, block in enumerate(content):
        if not isinstance(block, dict) or "type" not in block:
            raise Invalid(f"{where}.content.{i}: Input should be an object with a type")
        if block["type"] == "text" and not block.get("text"):
            raise Invalid(f"{where}.content.{i}: text content blocks must be non-empty")
        if block["type"] == "image":
            source = block.get("source") or {}
            ok = (source.get("type") == "base64" and source.get("media_type") and source.get("data")) or (
                source.get("type") == "url" and source.get("url")
            )
            if not ok:
                raise Invalid(f"{where}.content.{i}.image.source: invalid image source")
        if block["type"] == "tool_use" and not isinstance(block.get("input"), dict):
            raise Invalid(f"{where}.content.{i}.tool_use.input: Input should be a valid dictionary")
    return content


def _text(blocks: Iterable[JSONDict]) -> str:
    return " ".join(b["text"] for b in blocks if b.get("type") == "text")


def openai_body(native: JSONDict) -> tuple[JSONDict, str]:
    """The OpenAI-shaped body the brain plans from, and the assistant prefill (``""`` if none)."""
    if not isinstance(native.get("max_tokens"), int):
        raise Invalid("max_tokens: Field required")
    extra = sorted(set(native) - KNOWN_FIELDS)
    if extra:
        raise Invalid(f"{extra[0]}: Extra inputs are not permitted")
    messages = native.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Invalid("messages: at least one message is required")
    out: list[JSONDict] = []
    system = native.get("system")
    if system:
        out.append({"role": "system", "content": system if isinstance(system, str) else _text(system)})
    prefill = ""
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise Invalid(f"{where}.role: Input should be 'user' or 'assistant'")
        blocks = _blocks(message.get("content"), where)
        if role == "assistant":
            if index == len(messages) - 1 and all(b["type"] == "text" for b in blocks):
                prefill = _text(blocks)
                continue
            calls = [
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": orjson.dumps(b["input"]).decode()},
                }
                for b in blocks
                if b["type"] == "tool_use"
            ]
            turn: JSONDict = {"role": "assistant", "content": _text(blocks) or None}
            if calls:
                turn["tool_calls"] = calls
            out.append(turn)
            continue
        parts: list[JSONDict] = []
        for block in blocks:
            if block["type"] == "tool_result":
                result = block.get("content", "")
                text = result if isinstance(result, str) else _text(result)
                out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
            elif block["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": "fake://image"}})
            elif block["type"] == "text":
                parts.append({"type": "text", "text": block["text"]})
        if parts:
            out.append({"role": "user", "content": parts})
    body: JSONDict = {"model": native["model"], "messages": out, "max_tokens": native["max_tokens"]}
    if native.get("stop_sequences"):
        body["stop"] = native["stop_sequences"]
    tools = native.get("tools") or []
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t["name"],
                    "description": t.get("description", ""),
                    "parameters": t["input_schema"],
                },
            }
            for t in tools
        ]
    choice = native.get("tool_choice") or {}
    kind = choice.get("type")
    if kind in ("auto", "none"):
        body["tool_choice"] = kind
    elif kind == "any":
        body["tool_choice"] = "required"
    elif kind == "tool":
        body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    if choice.get("disable_parallel_tool_use"):
        body["parallel_tool_calls"] = False
    output_format = (native.get("output_config") or {}).get("format")
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {"schema": output_format["schema"]}}
    elif prefill.strip().startswith("{"):
        body["response_format"] = {"type": "json_object"}
    return body, prefill


# --------------------------------------------------------------------------------------------------
# Plan → native response


STOP_REASONS: Final = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class Rendered:
    """One plan in Anthropic's terms: content blocks, stop reason and usage."""

    def __init__(self, plan: ChatPlan, body: JSONDict, prefill: str) -> None:
        self.id = "msg_" + uuid.uuid4().hex[:24]
        self.model = plan.model
        self.stop_reason = STOP_REASONS[plan.finish_reason]
        self.stop_sequence: str | None = None
        text = plan.reply_text
        if self.stop_reason == "end_turn" and text is not None:
            full = reply_text(body, body["messages"])
            hit = [s for s in stop_sequences(body.get("stop")) if s in full]
            if hit:
                self.stop_reason, self.stop_sequence = "stop_sequence", hit[0]
        if text is not None and prefill and text.startswith(prefill.strip()):
            text = text[len(prefill.strip()) :]
        self.text = text
        self.calls = plan.tool_calls[0] if plan.tool_calls else []
        self.input_tokens = plan.prompt_tokens
        self.output_tokens = plan.completion_tokens()

    def usage(self, output_tokens: int) -> JSONDict:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    def content(self) -> list[JSONDict]:
        if self.calls:
            return [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": orjson.loads(c.arguments)}
                for c in self.calls
            ]
        return [{"type": "text", "text": self.text or ""}]

    def message(self) -> JSONDict:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.content(),
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self.usage(self.output_tokens),
        }

    def events(self) -> Iterator[bytes]:
        start = {**self.message(), "content": [], "stop_reason": None, "stop_sequence": None}
        start["usage"] = self.usage(1)
        yield event("message_start", {"type": "message_start", "message": start})
        yield event("ping", {"type": "ping"})
        if self.calls:
            for index, call in enumerate(self.calls):
                block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
                yield event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": block},
                )
                for fragment in ["", *call.fragments()]:
                    delta = {"type": "input_json_delta", "partial_json": fragment}
                    yield event(
                        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
                    )
                yield event("content_block_stop", {"type": "content_block_stop", "index": index})
        else:
            block = {"type": "text", "text": ""}
            yield event(
                "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
            )
            for piece in word_pieces(self.text or ""):
                delta = {"type": "text_delta", "text": piece}
                yield event(
                    "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
                )
            yield event("content_block_stop", {"type": "content_block_stop", "index": 0})
        delta = {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence}
        yield event(
            "message_delta",
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": self.output_tokens}},
        )
        yield event("message_stop", {"type": "message_stop"})


# --------------------------------------------------------------------------------------------------
# The server


class FakeAnthropic(FakeOpenAI):
    """A fake Anthropic server; lifecycle, recording and cancellation as in ``FakeOpenAI``."""

    def __init__(
        self, api_key: str = "sk-ant-fake-upstream-key", host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(api_key, host, port)

    async def start_async(self, backlog: int = 128) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._native_middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=backlog)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}"

    @web.middleware
    async def _native_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = "req_" + uuid.uuid4().hex
        body = await request.read()
        parsed: Any = None
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(body) if body else None
        request[REQUEST_JSON] = parsed
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(
            RecordedRequest(request.method, request.path, request.query_string, headers, body, parsed)
        )
        key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        if key != self.api_key:
            return error_response(401, "authentication_error", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return invalid("anthropic-version: header is required")
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return error_response(404, "not_found_error", "Not found")

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        native = request[REQUEST_JSON]
        if not isinstance(native, dict):
            return invalid("There was an error parsing the body of your request.")
        model = native.get("model")
        if not isinstance(model, str) or not model:
            return invalid("model: Field required")
        scenario = Scenario.for_model(model)
        streaming = native.get("stream") is True
        if scenario.error_status is not None:
            return scenario_error(scenario.error_status, model)
        if scenario.garbage:
            if streaming:
                garbage = b"event: message_start\ndata: <html>upstream garbage, not JSON\n\n"
                return web.Response(
                    body=garbage, headers={"Content-Type": "text/event-stream; charset=utf-8"}
                )
            return web.Response(body=b"<html>upstream garbage, not JSON", content_type="application/json")
        if scenario.midstream_drop and not streaming:
            return await self._drop_mid_body(request, native)
        try:
            body, prefill = openai_body(native)
        except Invalid as exc:
            return invalid(str(exc))
        rendered = Rendered(
            plan_chat(body, model, SLOW_STREAM_WORDS if scenario.slow_stream else None), body, prefill
        )
        if not streaming:
            return web.Response(body=orjson.dumps(rendered.message()), content_type="application/json")
        events: Iterable[bytes] = rendered.events()
        if model in OVERLOADED_AFTER:
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            events = [*list(events)[: OVERLOADED_AFTER[model]], event("error", error)]
        return await self._native_stream(
            request,
            model,
            events,
            delay=SLOW_STREAM_DELAY_S if scenario.slow_stream else 0.0,
            drop_after=MIDSTREAM_DROP_AFTER if scenario.midstream_drop else None,
        )

    async def _native_stream(
        self,
        request: web.Request,
        model: str,
        events: Iterable[bytes],
        *,
        delay: float,
        drop_after: int | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream; charset=utf-8"}
        )
        await response.prepare(request)
        try:
            for sent, data in enumerate(events):
                if drop_after is not None and sent >= drop_after:
                    self._abort(request)
                    return response
                if delay and await self._pause(delay):
                    self._abort(request)
                    return response
                if self._client_gone(request):
                    raise ConnectionResetError("the client went away")
                await response.write(data)
            await response.write_eof()
        except ConnectionError:
            self._record_cancel(model, request[REQUEST_ID])
        except asyncio.CancelledError:
            if not self._is_stopping:
                self._record_cancel(model, request[REQUEST_ID])
            raise
        return response
