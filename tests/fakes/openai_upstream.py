"""A faithful fake of the OpenAI REST API on loopback, for the gateway's tests and benchmark.

It speaks OpenAI's wire format (as in ``shared/specs/openai-openapi.yaml`` and as OpenAI's servers
actually send it), answers deterministically, and records every request it receives.

Behaviour in short:

* ``POST /v1/chat/completions``: the reply is ``"Echo: <text of the last user message>"`` (plus
  ``" [images: N]"`` when that message carries image parts). Tool calls, ``response_format``, ``n``,
  ``max_tokens``/``max_completion_tokens``, ``stop``, ``stream`` and ``stream_options`` are honoured.
* ``POST /v1/completions`` (legacy), ``POST /v1/embeddings``, ``GET /v1/models[/{id}]``.
* Tokens are words: ``prompt_tokens`` counts whitespace-separated words of every message text (85 per
  image part), ``completion_tokens`` counts the words of every choice's reply (a tool call counts
  one token per streamed argument fragment plus one for its name).
* Scenarios chosen by the requested model name: ``error-<status>[-<retry-after>]``, ``slow-stream``,
  ``stall``, ``stall-first-token``, ``latency-<ms>``, ``reset``, ``garbage`` and ``midstream-drop``
  (see ``Scenario``).

Standalone: ``python -m tests.fakes.openai_upstream --port 18000 --api-key KEY [--quiet]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import logging
import math
import random
import re
import signal
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web

JSONDict = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SYSTEM_FINGERPRINT: Final = "fp_fake0a1b2c"
SERVICE_TIER: Final = "default"
IMAGE_TOKENS: Final = 85  # what OpenAI bills for a low-detail image
LEGACY_DEFAULT_MAX_TOKENS: Final = 16  # the documented default of /v1/completions
DEFAULT_EMBEDDING_DIMENSIONS: Final = 8
ARGUMENT_FRAGMENT_CHARS: Final = 4
SLOW_STREAM_WORDS: Final = 200
SLOW_STREAM_DELAY_S: Final = 0.1
STALL_S: Final = 60.0
MIDSTREAM_DROP_AFTER: Final = 3
RETRY_AFTER_S: Final = "7"
MODEL_CREATED: Final = 1_715_367_049
LISTED_MODELS: Final = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
)
LOCATION_KEYS: Final = frozenset({"location", "city", "place", "city_name", "town"})
DEFAULT_CITY: Final = "San Francisco"

_WORD_PIECE = re.compile(r"\s*\S+")
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)
_CAPITALISED = r"[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*"
_TWO_CITIES = re.compile(rf"\b({_CAPITALISED})\s+and\s+({_CAPITALISED})")
_ONE_CITY = re.compile(rf"\b(?:in|for|at)\s+({_CAPITALISED})")
_OBFUSCATION_ALPHABET: Final = "Zq3vK8pWm2xR7tYb"
_SSE_DONE: Final = b"data: [DONE]\n\n"
REQUEST_ID: Final = web.RequestKey("request_id", str)
REQUEST_JSON: Final = web.RequestKey("json", object)

_RATE_LIMIT_HEADERS: Final = {
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-limit-tokens": "30000000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-remaining-tokens": "29999990",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-reset-tokens": "0s",
}
_EXHAUSTED_RATE_LIMIT_HEADERS: Final = {
    **_RATE_LIMIT_HEADERS,
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "7s",
}

# --------------------------------------------------------------------------------------------------
# Records


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    json: Any


@dataclass(frozen=True)
class CancelledStream:
    model: str
    request_id: str


# --------------------------------------------------------------------------------------------------
# Small text helpers


def word_pieces(text: str) -> list[str]:
    """Split text into words that keep their leading whitespace, so the pieces rejoin exactly."""
    return _WORD_PIECE.findall(text)


def count_words(text: str) -> int:
    return len(text.split())


def new_id(prefix: str, length: int = 29) -> str:
    return prefix + uuid.uuid4().hex[:length]


def obfuscation(seq: int) -> str:
    """Deterministic stand-in for OpenAI's random size-normalising padding."""
    size = (seq * 5 + 3) % len(_OBFUSCATION_ALPHABET)
    return _OBFUSCATION_ALPHABET[:size]


def sse(payload: JSONDict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


# --------------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class ErrorKind:
    type: str
    code: str | None
    message: str


_ERROR_KINDS: Final[dict[int, ErrorKind]] = {
    400: ErrorKind("invalid_request_error", None, "Invalid request (simulated by the fake upstream)."),
    401: ErrorKind(
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
    ),
    403: ErrorKind(
        "request_forbidden",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: ErrorKind(
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    409: ErrorKind(
        "invalid_request_error", "conflict", "The request conflicts with the current state of the resource."
    ),
    422: ErrorKind("invalid_request_error", "unprocessable_entity", "The request could not be processed."),
    429: ErrorKind(
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 7s.",
    ),
    500: ErrorKind(
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ErrorKind("server_error", None, "The engine is currently overloaded, please try again later."),
}


def error_payload(message: str, type_: str, param: str | None = None, code: str | None = None) -> JSONDict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(error_payload(message, type_, param, code)),
        content_type="application/json",
        headers=headers,
    )


def scenario_error(status: int, model: str, retry_after: str | None = None) -> web.Response:
    """The error OpenAI sends for ``status`` (a generic one for statuses it has no special body for)."""
    kind = _ERROR_KINDS.get(status)
    if kind is None:
        generic_type = "server_error" if status >= 500 else "invalid_request_error"
        kind = ErrorKind(generic_type, None, f"Simulated upstream error {status}.")
    headers = None
    if status == 429:
        headers = {"retry-after": retry_after or RETRY_AFTER_S, **_EXHAUSTED_RATE_LIMIT_HEADERS}
    return error_response(status, kind.message.format(model=model), kind.type, None, kind.code, headers)


def garbage_response(streaming: bool) -> web.Response:
    """A 200 whose body is not JSON (an SSE event whose data is not JSON, for streams)."""
    if streaming:
        body = b"data: <html>upstream garbage, not JSON\n\n" + _SSE_DONE
        return web.Response(
            status=200, body=body, headers={"Content-Type": "text/event-stream; charset=utf-8"}
        )
    return web.Response(status=200, body=b"<html>upstream garbage, not JSON", content_type="application/json")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> web.Response:
    return error_response(400, message, "invalid_request_error", param, code)


# --------------------------------------------------------------------------------------------------
# Scenarios (picked by the requested model name)


@dataclass(frozen=True)
class Scenario:
    """What the fake does instead of answering normally, chosen by the requested model name.

    * ``error-<status>``: that HTTP status with OpenAI's error body for it (429 adds ``retry-after``).
    * ``slow-stream``: streams ``SLOW_STREAM_WORDS`` words, one every ``SLOW_STREAM_DELAY_S``; a client
      leaving early is recorded in ``FakeOpenAI.cancelled_streams``.
    * ``stall``: waits ``STALL_S`` before answering (gives up when the client leaves or the server stops).
    * ``garbage``: 200 whose body is not JSON (for streams: an SSE event whose data is not JSON).
    * ``midstream-drop``: streams ``MIDSTREAM_DROP_AFTER`` chunks then aborts the connection without
      ``[DONE]`` (non-streaming: aborts half-way through a body of announced length).
    * ``error-429-<seconds>``: a 429 whose ``retry-after`` is ``<seconds>``.
    * ``stall-first-token``: sends the 200 and its headers at once, then waits ``STALL_S`` before the
      first byte of the body (gives up when the client leaves).
    * ``latency-<ms>``: answers normally after ``<ms>`` milliseconds.
    * ``reset``: closes the connection before sending anything.

    ``FakeOpenAI.set_override(model, scenario)`` plays a scenario for a model name at runtime.
    """

    error_status: int | None = None
    retry_after: str | None = None
    slow_stream: bool = False
    stall: bool = False
    garbage: bool = False
    midstream_drop: bool = False
    stall_first_token: bool = False
    latency_s: float = 0.0
    reset: bool = False

    @staticmethod
    def for_model(model: str) -> Scenario:
        if model.startswith("error-"):
            code, _, retry_after = model.removeprefix("error-").partition("-")
            if code.isdigit() and 400 <= int(code) <= 599 and (not retry_after or retry_after.isdigit()):
                return Scenario(error_status=int(code), retry_after=retry_after or None)
            return _NORMAL
        if model.startswith("latency-") and model.removeprefix("latency-").isdigit():
            return Scenario(latency_s=int(model.removeprefix("latency-")) / 1000)
        return _NAMED_SCENARIOS.get(model, _NORMAL)


_NORMAL: Final = Scenario()
_NAMED_SCENARIOS: Final = {
    "slow-stream": Scenario(slow_stream=True),
    "stall": Scenario(stall=True),
    "garbage": Scenario(garbage=True),
    "midstream-drop": Scenario(midstream_drop=True),
    "stall-first-token": Scenario(stall_first_token=True),
    "reset": Scenario(reset=True),
}


# --------------------------------------------------------------------------------------------------
# Reading chat requests


@dataclass
class MessageText:
    text: str = ""
    images: int = 0


def content_text(content: Any) -> MessageText:
    """Text and image count of a message ``content`` given as a string or a list of parts."""
    if isinstance(content, str):
        return MessageText(content)
    if not isinstance(content, list):
        return MessageText()
    texts: list[str] = []
    images = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "image_url":
            images += 1
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
    return MessageText(" ".join(texts), images)


def prompt_tokens_of(messages: list[Any]) -> int:
    total = 0
    for message in messages:
        if isinstance(message, dict):
            parsed = content_text(message.get("content"))
            total += count_words(parsed.text) + IMAGE_TOKENS * parsed.images
    return total


def last_user_message(messages: list[Any]) -> MessageText:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return MessageText()


def stop_sequences(stop: Any) -> list[str]:
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str) and s]
    return []


@dataclass
class Reply:
    """A text reply cut by ``stop`` and ``max_tokens``, as the model would produce it."""

    text: str
    finish_reason: str
    tokens: int


def shape_reply(full_text: str, stop: list[str], max_tokens: int | None) -> Reply:
    pieces = word_pieces(full_text)
    finish_reason = "stop"
    for i, piece in enumerate(pieces):
        if any(s in piece for s in stop):
            pieces = pieces[:i]
            break
    if max_tokens is not None and len(pieces) > max_tokens:
        pieces = pieces[: max(max_tokens, 0)]
        finish_reason = "length"
    return Reply("".join(pieces).lstrip(), finish_reason, len(pieces))


def sample_value(schema: Any, name: str, text: str, city: str) -> Any:
    """A deterministic value that satisfies a (simple) JSON schema."""
    if not isinstance(schema, dict):
        return text
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return sample_value((non_null or options)[0], name, text, city)
    schema_type = schema.get("type")
    if isinstance(schema_type, list):
        schema_type = next((t for t in schema_type if t != "null"), "null")
    if schema_type == "object" or (schema_type is None and "properties" in schema):
        properties = schema.get("properties") or {}
        return {key: sample_value(sub, key, text, city) for key, sub in properties.items()}
    if schema_type == "array":
        return [sample_value(schema.get("items"), name, text, city)]
    return {
        "integer": 1,
        "number": 1.5,
        "boolean": True,
        "null": None,
    }.get(str(schema_type), city if name.lower() in LOCATION_KEYS else text)


def cities_in(text: str, allow_two: bool) -> list[str]:
    if allow_two and (pair := _TWO_CITIES.search(text)):
        return [pair.group(1), pair.group(2)]
    if single := _ONE_CITY.search(text):
        return [single.group(1)]
    return [DEFAULT_CITY]


def function_tools(tools: Any) -> list[JSONDict]:
    if not isinstance(tools, list):
        return []
    return [
        t["function"]
        for t in tools
        if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
    ]


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str

    def fragments(self) -> list[str]:
        step = ARGUMENT_FRAGMENT_CHARS
        return [self.arguments[i : i + step] for i in range(0, len(self.arguments), step)] or [""]

    def tokens(self) -> int:
        return len(self.fragments()) + 1

    def as_message_field(self) -> JSONDict:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def plan_tool_calls(body: JSONDict, messages: list[Any]) -> list[ToolCall]:
    """The tool calls the model makes for this request (empty when it answers with text)."""
    functions = function_tools(body.get("tools"))
    tool_choice = body.get("tool_choice", "auto")
    if not functions or tool_choice == "none":
        return []
    last = messages[-1] if messages else None
    last_is_tool_result = isinstance(last, dict) and last.get("role") == "tool"
    user_text = last_user_message(messages).text
    chosen: JSONDict | None = None
    if isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict):
        wanted = tool_choice["function"].get("name")
        chosen = next((f for f in functions if f.get("name") == wanted), None)
    elif tool_choice == "required" or (not last_is_tool_result and _WEATHER.search(user_text)):
        chosen = functions[0]
    if chosen is None:
        return []
    cities = cities_in(user_text, allow_two=body.get("parallel_tool_calls") is not False)
    name = str(chosen.get("name", "tool"))
    return [
        ToolCall(
            new_id("call_", 24),
            name,
            orjson.dumps(sample_value(chosen.get("parameters") or {}, "", "example", city)).decode(),
        )
        for city in cities
    ]


def reply_text(body: JSONDict, messages: list[Any]) -> str:
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "tool":
        text = "The tool returned: " + content_text(last.get("content")).text
    else:
        user = last_user_message(messages)
        text = "Echo: " + user.text
        if user.images:
            text += f" [images: {user.images}]"
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            return orjson.dumps({"echo": text}).decode()
        if kind == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            value = sample_value(schema, "", text, DEFAULT_CITY) if schema else {"echo": text}
            return orjson.dumps(value).decode()
    return text


def max_tokens_of(body: JSONDict, default: int | None = None) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default


def choice_count(body: JSONDict) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1


@dataclass
class ChatPlan:
    """Everything a chat answer contains, shared by the streamed and the non-streamed form."""

    id: str
    created: int
    model: str
    n: int
    prompt_tokens: int
    reply: Reply | None
    tool_calls: list[list[ToolCall]] = field(default_factory=list)  # one list per choice

    @property
    def finish_reason(self) -> str:
        if self.tool_calls:
            return "tool_calls"
        return self.reply.finish_reason if self.reply else "stop"

    @property
    def reply_text(self) -> str | None:
        return None if self.tool_calls or self.reply is None else self.reply.text

    def completion_tokens(self) -> int:
        if self.tool_calls:
            return sum(call.tokens() for calls in self.tool_calls for call in calls)
        return self.n * (self.reply.tokens if self.reply else 0)

    def usage(self) -> JSONDict:
        completion = self.completion_tokens()
        return chat_usage(self.prompt_tokens, completion)


def chat_usage(prompt_tokens: int, completion_tokens: int) -> JSONDict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def plan_chat(body: JSONDict, model: str, words_override: int | None = None) -> ChatPlan:
    messages: list[Any] = body["messages"]
    n = choice_count(body)
    plan = ChatPlan(new_id("chatcmpl-"), int(time.time()), model, n, prompt_tokens_of(messages), None)
    first_calls = plan_tool_calls(body, messages)
    if first_calls:
        plan.tool_calls = [first_calls] + [plan_tool_calls(body, messages) for _ in range(n - 1)]
        return plan
    if words_override is not None:
        text = " ".join(f"word{i}" for i in range(1, words_override + 1))
    else:
        text = reply_text(body, messages)
    plan.reply = shape_reply(text, stop_sequences(body.get("stop")), max_tokens_of(body))
    return plan


# --------------------------------------------------------------------------------------------------
# Chat responses


def chat_completion_body(plan: ChatPlan) -> JSONDict:
    choices = []
    for index in range(plan.n):
        message: JSONDict = {"role": "assistant", "content": plan.reply_text}
        if plan.tool_calls:
            message["tool_calls"] = [call.as_message_field() for call in plan.tool_calls[index]]
        message["refusal"] = None
        message["annotations"] = []
        choices.append(
            {"index": index, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
        )
    return {
        "id": plan.id,
        "object": "chat.completion",
        "created": plan.created,
        "model": plan.model,
        "choices": choices,
        "usage": plan.usage(),
        "service_tier": SERVICE_TIER,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def _chunk_choice(index: int, delta: JSONDict, finish_reason: str | None = None) -> JSONDict:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def chat_stream_choices(plan: ChatPlan) -> Iterator[JSONDict]:
    """The ``choices[0]`` of every content chunk, in the order OpenAI sends them."""
    for index in range(plan.n):
        if plan.tool_calls:
            yield from _tool_call_choices(index, plan.tool_calls[index])
        else:
            yield _chunk_choice(index, {"role": "assistant", "content": "", "refusal": None})
            for piece in word_pieces(plan.reply.text if plan.reply else ""):
                yield _chunk_choice(index, {"content": piece})
        yield _chunk_choice(index, {}, plan.finish_reason)


def _tool_call_choices(index: int, calls: list[ToolCall]) -> Iterator[JSONDict]:
    for position, call in enumerate(calls):
        opening = {
            "index": position,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        if position == 0:
            delta = {"role": "assistant", "content": None, "tool_calls": [opening], "refusal": None}
        else:
            delta = {"tool_calls": [opening]}
        yield _chunk_choice(index, delta)
        for fragment in call.fragments():
            yield _chunk_choice(
                index, {"tool_calls": [{"index": position, "function": {"arguments": fragment}}]}
            )


def chat_stream_chunks(plan: ChatPlan, include_usage: bool, include_obfuscation: bool) -> Iterator[JSONDict]:
    envelope = {
        "id": plan.id,
        "object": "chat.completion.chunk",
        "created": plan.created,
        "model": plan.model,
        "service_tier": SERVICE_TIER,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    seq = 0
    for choice in chat_stream_choices(plan):
        chunk = {**envelope, "choices": [choice]}
        if include_usage:
            chunk["usage"] = None
        if include_obfuscation:
            chunk["obfuscation"] = obfuscation(seq)
        seq += 1
        yield chunk
    if include_usage:
        chunk = {**envelope, "choices": [], "usage": plan.usage()}
        if include_obfuscation:
            chunk["obfuscation"] = obfuscation(seq)
        yield chunk


# --------------------------------------------------------------------------------------------------
# Legacy completions


@dataclass
class Prompt:
    text: str
    tokens: int


def parse_prompts(prompt: Any) -> list[Prompt] | None:
    """Normalise a legacy ``prompt`` (str, [str], [int] or [[int]]); None when malformed."""
    if prompt is None:
        return [Prompt("", 0)]
    if isinstance(prompt, str):
        return [Prompt(prompt, count_words(prompt))]
    if not isinstance(prompt, list) or not prompt:
        return None
    if all(isinstance(p, str) for p in prompt):
        return [Prompt(p, count_words(p)) for p in prompt]
    if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        return [Prompt(" ".join(map(str, prompt)), len(prompt))]
    if all(isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompt):
        return [Prompt(" ".join(map(str, p)), len(p)) for p in prompt]
    return None


@dataclass
class CompletionPlan:
    id: str
    created: int
    model: str
    prompt_tokens: int
    texts: list[tuple[str, str]]  # (text, finish_reason) per choice, prompt-major
    completion_tokens: int

    def usage(self) -> JSONDict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def plan_completion(
    body: JSONDict, model: str, prompts: list[Prompt], words_override: int | None
) -> CompletionPlan:
    n = choice_count(body)
    stop = stop_sequences(body.get("stop"))
    limit = max_tokens_of(body, LEGACY_DEFAULT_MAX_TOKENS) if words_override is None else None
    texts: list[tuple[str, str]] = []
    completion_tokens = 0
    for prompt in prompts:
        if words_override is not None:
            full = " ".join(f"word{i}" for i in range(1, words_override + 1))
        else:
            full = "Echo: " + prompt.text
        reply = shape_reply(full, stop, limit)
        text = (prompt.text + reply.text) if body.get("echo") is True else reply.text
        texts.extend([(text, reply.finish_reason)] * n)
        completion_tokens += reply.tokens * n
    return CompletionPlan(
        new_id("cmpl-"),
        int(time.time()),
        model,
        sum(p.tokens for p in prompts),
        texts,
        completion_tokens,
    )


def completion_body(plan: CompletionPlan) -> JSONDict:
    return {
        "id": plan.id,
        "object": "text_completion",
        "created": plan.created,
        "model": plan.model,
        "choices": [
            {"text": text, "index": i, "logprobs": None, "finish_reason": finish}
            for i, (text, finish) in enumerate(plan.texts)
        ],
        "usage": plan.usage(),
    }


def completion_stream_chunks(plan: CompletionPlan, include_usage: bool) -> Iterator[JSONDict]:
    def chunk(choices: list[JSONDict]) -> JSONDict:
        out: JSONDict = {
            "id": plan.id,
            "object": "text_completion",
            "created": plan.created,
            "choices": choices,
            "model": plan.model,
        }
        if include_usage:
            out["usage"] = None
        return out

    for index, (text, finish) in enumerate(plan.texts):
        for piece in word_pieces(text):
            yield chunk([{"text": piece, "index": index, "logprobs": None, "finish_reason": None}])
        yield chunk([{"text": "", "index": index, "logprobs": None, "finish_reason": finish}])
    if include_usage:
        yield {**chunk([]), "usage": plan.usage()}


# --------------------------------------------------------------------------------------------------
# Embeddings


def parse_embedding_inputs(value: Any) -> list[tuple[bytes, int]] | None:
    """(hash key, token count) per input; None when malformed (OpenAI rejects empty strings)."""
    if isinstance(value, str):
        return [(value.encode(), count_words(value))] if value else None
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, str) and v for v in value):
        return [(v.encode(), count_words(v)) for v in value]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [(orjson.dumps(value), len(value))]
    if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
        return [(orjson.dumps(v), len(v)) for v in value]
    return None


def embedding_vector(key: bytes, dimensions: int) -> list[float]:
    """A deterministic unit vector, already rounded to float32 so both encodings agree."""
    seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(x / norm for x in raw))
    return list(struct.unpack(f"<{dimensions}f", packed))


def encode_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


# --------------------------------------------------------------------------------------------------
# The server


class FakeOpenAI:
    """A fake OpenAI server on loopback; ``start()`` serves it from a background thread."""

    def __init__(
        self,
        api_key: str = "sk-fake-upstream-key",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        record: bool = True,
        access_log: bool = False,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.cancelled_streams: list[str] = []
        self.cancelled: list[CancelledStream] = []
        self._overrides: dict[str, str] = {}
        self._record = record
        self._access_log = access_log
        self._expected_auth = f"Bearer {api_key}"
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("FakeOpenAI is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._serve_in_thread, args=(ready, failure), name="fake-openai", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout=15):
            raise RuntimeError("FakeOpenAI did not start within 15 s")
        if failure:
            self._thread.join(timeout=5)
            self._thread = None
            raise RuntimeError("FakeOpenAI failed to start") from failure[0]

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        # RuntimeError: the loop is already closed; TimeoutError: a handler refused to finish.
        with contextlib.suppress(RuntimeError, TimeoutError):
            asyncio.run_coroutine_threadsafe(self.stop_async(), loop).result(timeout=15)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)
        self._thread = None
        self._loop = None

    def clear(self) -> None:
        self.requests.clear()
        self.cancelled_streams.clear()
        self.cancelled.clear()

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve_in_thread(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self.start_async())
        except BaseException as exc:  # reported to start()
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.stop_async())
            loop.close()

    async def start_async(self, backlog: int = 128) -> None:
        """Start serving on the running loop (used by ``start()`` and the standalone runner)."""
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/v1/models/{model}", self._retrieve_model)
        app.on_response_prepare.append(self._add_openai_headers)
        runner_options: dict[str, Any] = {"handler_cancellation": True, "shutdown_timeout": 2.0}
        if not self._access_log:
            runner_options["access_log"] = None
        runner = web.AppRunner(app, **runner_options)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=backlog)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}/v1"

    async def stop_async(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ---- plumbing -------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = "req_" + uuid.uuid4().hex
        body = await request.read()
        parsed: Any = None
        if body:
            with contextlib.suppress(orjson.JSONDecodeError):
                parsed = orjson.loads(body)
        request[REQUEST_JSON] = parsed
        if self._record:
            headers: dict[str, str] = {}
            for name, value in request.headers.items():
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            self.requests.append(
                RecordedRequest(request.method, request.path, request.query_string, headers, body, parsed)
            )
        auth_error = self._check_auth(request.headers.get("Authorization"))
        if auth_error is not None:
            return auth_error
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return error_response(404, f"Invalid URL ({request.method} {request.path})")

    def _check_auth(self, authorization: str | None) -> web.Response | None:
        if authorization == self._expected_auth:
            return None
        if not authorization:
            message = (
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        else:
            shown = authorization.removeprefix("Bearer ").strip()
            masked = shown[:3] + "*" * max(len(shown) - 7, 0) + shown[-4:] if len(shown) > 7 else "***"
            message = (
                f"Incorrect API key provided: {masked}. "
                "You can find your API key at https://platform.openai.com/account/api-keys."
            )
        return error_response(401, message, "invalid_request_error", None, "invalid_api_key")

    @staticmethod
    async def _add_openai_headers(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers["x-request-id"] = request.get(REQUEST_ID, "req_unknown")
        headers["openai-version"] = "2020-10-01"
        headers["openai-organization"] = "org-fake"
        headers["openai-processing-ms"] = "1"
        for name, value in _RATE_LIMIT_HEADERS.items():
            headers.setdefault(name, value)

    def _record_cancel(self, model: str, request_id: str) -> None:
        self.cancelled.append(CancelledStream(model, request_id))
        self.cancelled_streams.append(model)

    @property
    def _is_stopping(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    async def _pause(self, seconds: float) -> bool:
        """Sleep, waking early when the server stops; True if it is stopping."""
        if self._stopping is None:
            await asyncio.sleep(seconds)
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()

    @staticmethod
    def _json_body(request: web.Request) -> JSONDict | web.Response:
        parsed = request[REQUEST_JSON]
        if isinstance(parsed, dict):
            return parsed
        return bad_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
            "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent "
            "was not valid JSON. If you have trouble figuring out how to fix this, please contact us "
            "through our help center at help.openai.com.)"
        )

    async def _common_scenarios(
        self, request: web.Request, body: JSONDict
    ) -> tuple[str, Scenario] | web.StreamResponse:
        """Validate ``model`` and play the scenarios that do not depend on the endpoint."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return bad_request("you must provide a model parameter")
        scenario = Scenario.for_model(self._overrides.get(model, model))
        if scenario.reset:
            self._abort(request)
            return web.Response(status=500)
        if scenario.latency_s and await self._pause(scenario.latency_s):
            return scenario_error(503, model)
        if scenario.error_status is not None:
            return scenario_error(scenario.error_status, model, scenario.retry_after)
        if scenario.stall_first_token:
            return await self._stall_after_headers(request, bool(body.get("stream")))
        if scenario.garbage:
            return garbage_response(streaming=bool(body.get("stream")))
        if scenario.stall and not await self._stall(request):
            return scenario_error(503, model)
        if scenario.midstream_drop and not body.get("stream"):
            return await self._drop_mid_body(request, body)
        return model, scenario

    async def _stall(self, request: web.Request) -> bool:
        """Wait ``STALL_S``; False when interrupted by the client leaving or the server stopping."""
        deadline = time.monotonic() + STALL_S
        while time.monotonic() < deadline:
            if await self._pause(0.05) or self._client_gone(request):
                return False
        return True

    async def _stall_after_headers(self, request: web.Request, streaming: bool) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_type = "text/event-stream" if streaming else "application/json"
        if not streaming:
            response.content_length = 2
        await response.prepare(request)
        await self._stall(request)
        self._abort(request)
        return response

    def set_override(self, model: str, scenario: str | None) -> None:
        """Play `scenario` (a scenario model name) for requests naming `model`; None restores it."""
        if scenario is None:
            self._overrides.pop(model, None)
        else:
            self._overrides[model] = scenario

    def count(self, model: str) -> int:
        """Recorded requests whose body named `model`."""
        return sum(
            1 for r in list(self.requests) if isinstance(r.json, dict) and r.json.get("model") == model
        )

    @staticmethod
    def _client_gone(request: web.Request) -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    async def _drop_mid_body(self, request: web.Request, body: JSONDict) -> web.StreamResponse:
        payload = orjson.dumps(
            {"id": new_id("chatcmpl-"), "object": "chat.completion", "model": body["model"]}
        )
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.content_length = len(payload) * 2
        await response.prepare(request)
        await response.write(payload)
        self._abort(request)
        return response

    @staticmethod
    def _abort(request: web.Request) -> None:
        if request.transport is not None:
            request.transport.abort()

    async def _stream(
        self,
        request: web.Request,
        model: str,
        chunks: Iterable[JSONDict],
        *,
        delay: float = 0.0,
        drop_after: int | None = None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream; charset=utf-8"}
        )
        await response.prepare(request)
        try:
            for sent, chunk in enumerate(chunks):
                if drop_after is not None and sent >= drop_after:
                    self._abort(request)
                    return response
                if delay and await self._pause(delay):
                    self._abort(request)  # the server is stopping
                    return response
                if self._client_gone(request):
                    raise ConnectionResetError("the client went away")
                await response.write(sse(chunk))
            await response.write(_SSE_DONE)
            await response.write_eof()
        except ConnectionError:
            self._record_cancel(model, request[REQUEST_ID])
        except asyncio.CancelledError:  # handler cancelled because the connection was lost
            if not self._is_stopping:
                self._record_cancel(model, request[REQUEST_ID])
            raise
        return response

    # ---- endpoints ------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = self._json_body(request)
        if isinstance(body, web.Response):
            return body
        outcome = await self._common_scenarios(request, body)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        model, scenario = outcome
        messages = body.get("messages")
        if messages is None:
            return bad_request(
                "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
            )
        if not isinstance(messages, list) or not messages:
            return bad_request(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty "
                "array instead.",
                "messages",
                "empty_array",
            )
        plan = plan_chat(body, model, SLOW_STREAM_WORDS if scenario.slow_stream else None)
        if not body.get("stream"):
            return web.Response(
                body=orjson.dumps(chat_completion_body(plan)), content_type="application/json"
            )
        options = body.get("stream_options") or {}
        chunks = chat_stream_chunks(
            plan,
            include_usage=options.get("include_usage") is True,
            include_obfuscation=options.get("include_obfuscation") is not False,
        )
        return await self._stream(
            request,
            model,
            chunks,
            delay=SLOW_STREAM_DELAY_S if scenario.slow_stream else 0.0,
            drop_after=MIDSTREAM_DROP_AFTER if scenario.midstream_drop else None,
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = self._json_body(request)
        if isinstance(body, web.Response):
            return body
        outcome = await self._common_scenarios(request, body)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        model, scenario = outcome
        prompts = parse_prompts(body.get("prompt"))
        if prompts is None:
            return bad_request(
                "Invalid 'prompt': expected a string, an array of strings or of tokens.", "prompt"
            )
        plan = plan_completion(body, model, prompts, SLOW_STREAM_WORDS if scenario.slow_stream else None)
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(completion_body(plan)), content_type="application/json")
        options = body.get("stream_options") or {}
        return await self._stream(
            request,
            model,
            completion_stream_chunks(plan, include_usage=options.get("include_usage") is True),
            delay=SLOW_STREAM_DELAY_S if scenario.slow_stream else 0.0,
            drop_after=MIDSTREAM_DROP_AFTER if scenario.midstream_drop else None,
        )

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = self._json_body(request)
        if isinstance(body, web.Response):
            return body
        outcome = await self._common_scenarios(request, body)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        model, _ = outcome
        inputs = parse_embedding_inputs(body.get("input"))
        if inputs is None:
            return bad_request(
                "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
            )
        dimensions = body.get("dimensions", DEFAULT_EMBEDDING_DIMENSIONS)
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            return bad_request(
                "Invalid 'dimensions': must be a positive integer.", "dimensions", "invalid_value"
            )
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return bad_request(
                f"Invalid value for 'encoding_format': '{encoding}'. "
                "Supported values are: 'float' and 'base64'.",
                "encoding_format",
                "invalid_value",
            )
        data = []
        for index, (key, _tokens) in enumerate(inputs):
            vector = embedding_vector(key, dimensions)
            data.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": encode_base64(vector) if encoding == "base64" else vector,
                }
            )
        tokens = sum(t for _, t in inputs)
        payload = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        payload = {"object": "list", "data": [model_object(m) for m in LISTED_MODELS]}
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def _retrieve_model(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        scenario = Scenario.for_model(model)
        if scenario.error_status is not None:
            return scenario_error(scenario.error_status, model)
        return web.Response(body=orjson.dumps(model_object(model)), content_type="application/json")


def model_object(model: str) -> JSONDict:
    return {"id": model, "object": "model", "created": MODEL_CREATED, "owned_by": "system"}


# --------------------------------------------------------------------------------------------------
# Standalone runner


async def serve_until_signalled(fake: FakeOpenAI) -> None:
    await fake.start_async(backlog=1024)
    print(f"fake OpenAI listening on {fake.base_url}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await fake.stop_async()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the fake OpenAI API until SIGTERM/SIGINT.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--api-key", default="sk-fake-upstream-key")
    parser.add_argument("--quiet", action="store_true", help="disable access logging")
    args = parser.parse_args(argv)
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    fake = FakeOpenAI(args.api_key, args.host, args.port, record=False, access_log=not args.quiet)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_until_signalled(fake))
    else:
        uvloop.run(serve_until_signalled(fake))


if __name__ == "__main__":
    main()
