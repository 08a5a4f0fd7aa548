"""A fake of Cohere's REST API on loopback, speaking its real wire format.

``POST /v2/chat`` (JSON, or SSE ``event:``/``data:`` events ending with ``data: [DONE]``),
``POST /v2/embed`` and ``POST /v1/generate`` (JSON, or newline-delimited JSON events), with
``Authorization: Bearer <key>`` and error bodies ``{"id": ..., "message": ...}``. The answers
come from the OpenAI fake's provider-neutral brain (``plan_chat``, ``plan_completion``): the native
request is translated into an OpenAI-shaped body, planned, and rendered the Cohere way. Scenarios by
model name as in ``openai_upstream.Scenario`` (error-<status>, slow-stream, stall, garbage,
midstream-drop). Unknown request fields answer 400, as Cohere does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Iterator
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
    JSONDict,
    Scenario,
    count_words,
    embedding_vector,
    parse_prompts,
    plan_chat,
    plan_completion,
    reply_text,
    word_pieces,
)

PREAMBLE_TOKENS: Final = 66
"""Cohere counts its own system preamble in `usage.tokens.input_tokens`, not in `billed_units`."""
TOOL_PLAN: Final = "I will call the tool to answer."
CHAT_FIELDS: Final = frozenset(
    {
        "model", "messages", "tools", "strict_tools", "documents", "citation_options", "response_format",
        "safety_mode", "max_tokens", "stop_sequences", "temperature", "seed", "frequency_penalty",
        "presence_penalty", "k", "p", "logprobs", "tool_choice", "thinking", "priority", "stream",
    }
)  # fmt: skip
EMBED_FIELDS: Final = frozenset(
    {"texts", "images", "model", "input_type", "inputs", "max_tokens", "output_dimension",
     "embedding_types", "truncate", "priority"}
)  # fmt: skip
GENERATE_FIELDS: Final = frozenset(
    {"prompt", "model", "num_generations", "stream", "max_tokens", "truncate", "temperature", "seed",
     "preset", "end_sequences", "stop_sequences", "k", "p", "frequency_penalty", "presence_penalty",
     "return_likelihoods", "raw_prompting"}
)  # fmt: skip
FINISH: Final = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "TOOL_CALL"}
_MESSAGES: Final = {
    400: "invalid request: simulated by the fake upstream",
    401: "invalid api token",
    403: "You are not authorized to access this resource.",
    404: "model '{model}' not found, make sure the correct model ID was used and that you have access to the model.",
    429: "You are using a Trial key, which is limited to 10 API calls / minute.",
    500: "internal server error, this has been reported to our developers",
    503: "service unavailable",
}


def cohere_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = orjson.dumps({"id": str(uuid.uuid4()), "message": message})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def scenario_error(status: int, model: str) -> web.Response:
    message = _MESSAGES.get(status, f"simulated upstream error {status}").format(model=model)
    return cohere_error(status, message, {"retry-after": RETRY_AFTER_S} if status == 429 else None)


def sse_event(payload: JSONDict) -> bytes:
    return f"event: {payload['type']}\n".encode() + b"data: " + orjson.dumps(payload) + b"\n\n"


# --------------------------------------------------------------------------------------------------
# Native request → the brain's OpenAI-shaped body


def _openai_message(message: Any) -> JSONDict | str:
    if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "tool"):
        return "invalid request: each message needs a role of system, user, assistant or tool"
    role = message["role"]
    if role == "tool":
        if not isinstance(message.get("tool_call_id"), str):
            return "invalid request: tool messages need a tool_call_id"
        content = message.get("content")
        if isinstance(content, list):  # text or document blocks
            texts = [p.get("text") or orjson.dumps(p.get("document")).decode() for p in content]
            content = " ".join(texts)
        return {"role": "tool", "tool_call_id": message["tool_call_id"], "content": content}
    out = {"role": role, "content": message.get("content")}
    if role == "assistant" and message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
        out["content"] = message.get("tool_plan")
    return out


def openai_chat_body(body: JSONDict) -> JSONDict | str:
    """The OpenAI-shaped body the brain plans from, or the 400 message Cohere would answer."""
    unknown = sorted(set(body) - CHAT_FIELDS)
    if unknown:
        return f"invalid request: unknown field: parameter '{unknown[0]}' is not a valid field"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "invalid request: messages must be a non-empty list"
    converted = [_openai_message(m) for m in messages]
    errors = [m for m in converted if isinstance(m, str)]
    if errors:
        return errors[0]
    out: JSONDict = {"messages": converted, "tools": body.get("tools")}
    choice = body.get("tool_choice")
    if choice is not None:
        if choice not in ("REQUIRED", "NONE"):
            return "invalid request: tool_choice must be one of REQUIRED, NONE"
        if choice == "REQUIRED" and not body.get("tools"):
            return "invalid request: tool_choice REQUIRED needs tools"
        out["tool_choice"] = choice.lower()
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_object":
        schema = response_format.get("json_schema")
        out["response_format"] = (
            {"type": "json_schema", "json_schema": {"name": "schema", "schema": schema}}
            if schema
            else {"type": "json_object"}
        )
    out["stop"] = body.get("stop_sequences")
    out["max_tokens"] = body.get("max_tokens")
    return out


# --------------------------------------------------------------------------------------------------
# Rendering


def _usage(plan: ChatPlan) -> JSONDict:
    completion = plan.completion_tokens()
    return {
        "billed_units": {"input_tokens": plan.prompt_tokens, "output_tokens": completion},
        "tokens": {"input_tokens": plan.prompt_tokens + PREAMBLE_TOKENS, "output_tokens": completion},
    }


def _finish_reason(plan: ChatPlan, openai_body: JSONDict) -> str:
    if plan.finish_reason == "stop" and plan.reply is not None and openai_body.get("stop"):
        full = reply_text(openai_body, openai_body["messages"])
        if count_words(full) > plan.reply.tokens:
            return "STOP_SEQUENCE"
    return FINISH[plan.finish_reason]


def chat_body(plan: ChatPlan, finish: str) -> JSONDict:
    message: JSONDict = {"role": "assistant"}
    if plan.tool_calls:
        message["tool_plan"] = TOOL_PLAN
        message["tool_calls"] = [call.as_message_field() for call in plan.tool_calls[0]]
    else:
        message["content"] = [{"type": "text", "text": plan.reply_text or ""}]
    return {"id": str(uuid.uuid4()), "message": message, "finish_reason": finish, "usage": _usage(plan)}


def chat_events(plan: ChatPlan, finish: str) -> Iterator[JSONDict]:
    empty = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    yield {"id": str(uuid.uuid4()), "type": "message-start", "delta": {"message": empty}}
    if plan.tool_calls:
        for piece in word_pieces(TOOL_PLAN):
            yield {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}}
        for index, call in enumerate(plan.tool_calls[0]):
            start = {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
            yield {"type": "tool-call-start", "index": index, "delta": {"message": {"tool_calls": start}}}
            for fragment in call.fragments():
                fragment_delta = {"tool_calls": {"function": {"arguments": fragment}}}
                yield {"type": "tool-call-delta", "index": index, "delta": {"message": fragment_delta}}
            yield {"type": "tool-call-end", "index": index}
    else:
        start = {"content": {"type": "text", "text": ""}}
        yield {"type": "content-start", "index": 0, "delta": {"message": start}}
        for piece in word_pieces(plan.reply_text or ""):
            yield {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": piece}}}}
        yield {"type": "content-end", "index": 0}
    yield {"type": "message-end", "delta": {"finish_reason": finish, "usage": _usage(plan)}}


# --------------------------------------------------------------------------------------------------
# The server


class FakeCohere(FakeOpenAI):
    """The Cohere fake; ``start()`` serves it from a background thread (FakeOpenAI's lifecycle)."""

    def __init__(self, api_key: str = "co-fake-upstream-key", host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(api_key, host, port)

    async def start_async(self, backlog: int = 128) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v2/chat", self._cohere_chat)
        app.router.add_post("/v2/embed", self._cohere_embed)
        app.router.add_post("/v1/generate", self._cohere_generate)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=backlog)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}"

    def _check_auth(self, authorization: str | None) -> web.Response | None:
        if authorization == self._expected_auth:
            return None
        return cohere_error(401, "invalid api token" if authorization else "no api key supplied")

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return cohere_error(404, f"{request.method} {request.path} not found")

    async def _prelude(
        self, request: web.Request, fields: frozenset[str]
    ) -> tuple[JSONDict, str, Scenario] | web.StreamResponse:
        body = request[REQUEST_JSON]
        if not isinstance(body, dict):
            return cohere_error(400, "invalid request: could not parse the request body as JSON")
        unknown = sorted(set(body) - fields)
        if unknown:
            return cohere_error(400, f"invalid request: unknown field: parameter '{unknown[0]}' is not valid")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return cohere_error(400, "invalid request: model must be specified")
        scenario = Scenario.for_model(model)
        if scenario.error_status is not None:
            return scenario_error(scenario.error_status, model)
        if scenario.garbage:
            if body.get("stream"):
                payload = b"event: content-delta\ndata: <html>upstream garbage, not JSON\n\n"
                return web.Response(body=payload, headers={"Content-Type": "text/event-stream"})
            return web.Response(body=b"<html>upstream garbage, not JSON", content_type="application/json")
        if scenario.stall and not await self._stall(request):
            return scenario_error(503, model)
        if scenario.midstream_drop and not body.get("stream"):
            return await self._drop_mid_body(request, body)
        return body, model, scenario

    async def _emit(
        self,
        request: web.Request,
        model: str,
        frames: Iterable[bytes],
        content_type: str,
        scenario: Scenario,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
        await response.prepare(request)
        delay = SLOW_STREAM_DELAY_S if scenario.slow_stream else 0.0
        drop_after = MIDSTREAM_DROP_AFTER + 2 if scenario.midstream_drop else None
        try:
            for sent, frame in enumerate(frames):
                if drop_after is not None and sent >= drop_after:
                    self._abort(request)
                    return response
                if delay and await self._pause(delay):
                    self._abort(request)
                    return response
                if self._client_gone(request):
                    raise ConnectionResetError("the client went away")
                await response.write(frame)
            await response.write_eof()
        except ConnectionError:
            self._record_cancel(model, request[REQUEST_ID])
        except asyncio.CancelledError:
            if not self._is_stopping:
                self._record_cancel(model, request[REQUEST_ID])
            raise
        return response

    async def _cohere_chat(self, request: web.Request) -> web.StreamResponse:
        outcome = await self._prelude(request, CHAT_FIELDS)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        body, model, scenario = outcome
        openai_body = openai_chat_body(body)
        if isinstance(openai_body, str):
            return cohere_error(400, openai_body)
        plan = plan_chat(openai_body, model, SLOW_STREAM_WORDS if scenario.slow_stream else None)
        finish = _finish_reason(plan, openai_body)
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(chat_body(plan, finish)), content_type="application/json")
        frames = [*map(sse_event, chat_events(plan, finish)), b"data: [DONE]\n\n"]
        return await self._emit(request, model, frames, "text/event-stream", scenario)

    async def _cohere_embed(self, request: web.Request) -> web.StreamResponse:
        outcome = await self._prelude(request, EMBED_FIELDS)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        body, _, _ = outcome
        texts = body.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return cohere_error(400, "invalid request: texts must be a non-empty list of strings")
        if body.get("input_type") is None:
            return cohere_error(400, "invalid request: input_type is required for embed-v3 and newer models")
        types = body.get("embedding_types", ["float"])
        dimensions = body.get("output_dimension", DEFAULT_EMBEDDING_DIMENSIONS)
        if not isinstance(dimensions, int) or dimensions < 1:
            return cohere_error(400, "invalid request: output_dimension must be a positive integer")
        vectors = [embedding_vector(t.encode(), dimensions) for t in texts]
        payload = {
            "id": str(uuid.uuid4()),
            "texts": texts,
            "embeddings": {t: vectors if t == "float" else [] for t in types},
            "meta": {
                "api_version": {"version": "2"},
                "billed_units": {"input_tokens": sum(count_words(t) for t in texts)},
            },
            "response_type": "embeddings_by_type",
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def _cohere_generate(self, request: web.Request) -> web.StreamResponse:
        outcome = await self._prelude(request, GENERATE_FIELDS)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        body, model, scenario = outcome
        prompts = parse_prompts(body.get("prompt"))
        if not isinstance(body.get("prompt"), str) or prompts is None:
            return cohere_error(400, "invalid request: prompt must be a string")
        openai_body = {
            "n": body.get("num_generations"),
            "max_tokens": body.get("max_tokens"),
            "stop": body.get("stop_sequences"),
        }
        words = SLOW_STREAM_WORDS if scenario.slow_stream else None
        plan = plan_completion(openai_body, model, prompts, words)
        generations: list[JSONDict] = [
            {"id": str(uuid.uuid4()), "text": text, "index": i, "finish_reason": FINISH[finish]}
            for i, (text, finish) in enumerate(plan.texts)
        ]
        meta = {
            "api_version": {"version": "1"},
            "billed_units": {"input_tokens": plan.prompt_tokens, "output_tokens": plan.completion_tokens},
        }
        final = {"id": str(uuid.uuid4()), "generations": generations, "prompt": prompts[0].text, "meta": meta}
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(final), content_type="application/json")
        many = len(generations) > 1
        frames: list[bytes] = []
        for generation in generations:
            for piece in word_pieces(generation["text"]):
                event: JSONDict = {"text": piece, "is_finished": False, "event_type": "text-generation"}
                if many:
                    event["index"] = generation["index"]
                frames.append(orjson.dumps(event) + b"\n")
        end = {
            "is_finished": True,
            "event_type": "stream-end",
            "finish_reason": generations[-1]["finish_reason"],
            "response": final,
        }
        frames.append(orjson.dumps(end) + b"\n")
        return await self._emit(request, model, frames, "application/stream+json", scenario)
