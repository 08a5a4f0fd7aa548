"""A built-in offline provider, so the quickstart runs with no keys and no network.

Chat answers echo the last user message, streamed word by word with real usage counts (one token
per whitespace-separated word); embeddings are deterministic unit-norm vectors of the input.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import msgspec
from pydantic import Field

from modelyard.providers.base import Capability, Provider, ProviderSettings, ProviderSpec
from modelyard.schema.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    FunctionCallDelta,
    Message,
    NamedToolChoice,
    ResponseMessage,
    TextPart,
    ToolCall,
    ToolCallDelta,
)
from modelyard.schema.common import Usage
from modelyard.schema.completions import Completion, CompletionChoice, CompletionRequest
from modelyard.schema.embeddings import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage

DEFAULT_DIMENSIONS = 16


class DemoSettings(ProviderSettings):
    word_delay_ms: float = Field(default=0.0, ge=0, le=1000)
    """Pause between streamed words, to make streaming visible in a terminal."""


def _message_text(message: Message) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.text for part in content if isinstance(part, TextPart))
    return ""


def _words(texts: Iterable[str]) -> int:
    return sum(len(text.split()) for text in texts)


def _limit(request: ChatRequest | CompletionRequest) -> int | None:
    limit = getattr(request, "max_completion_tokens", None)
    if not isinstance(limit, int):
        limit = request.max_tokens
    return limit if isinstance(limit, int) else None


def reply_words(request: ChatRequest) -> tuple[list[str], str]:
    """The echo reply as words, and the finish reason after max_tokens and stop are applied."""
    last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
    text = _message_text(last_user) if last_user else ""
    return _truncate(["You", "said:", *text.split()], request)


def _truncate(words: list[str], request: ChatRequest | CompletionRequest) -> tuple[list[str], str]:
    stops = request.stop if isinstance(request.stop, list) else [request.stop] if request.stop else []
    for index, word in enumerate(words):
        if any(isinstance(stop, str) and stop and stop in word for stop in stops):
            return words[:index], "stop"
    limit = _limit(request)
    if limit is not None and len(words) > limit:
        return words[:limit], "length"
    return words, "stop"


def _forced_tool(request: ChatRequest) -> str | None:
    tools = request.tools if isinstance(request.tools, list) else []
    if not tools:
        return None
    if isinstance(request.tool_choice, NamedToolChoice):
        return request.tool_choice.function.name
    return tools[0].function.name if request.tool_choice == "required" else None


def _tool_call_deltas(name: str) -> list[Delta]:
    """A forced call of `name`: id and name first, then the (empty-object) arguments."""
    opening = ToolCallDelta(
        index=0, id=_new_id("call"), type="function", function=FunctionCallDelta(name=name, arguments="")
    )
    arguments = ToolCallDelta(index=0, function=FunctionCallDelta(arguments="{}"))
    return [Delta(tool_calls=[opening]), Delta(tool_calls=[arguments])]


def _usage(prompt: int, completion: int) -> Usage:
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class DemoProvider(Provider):
    capabilities = frozenset(
        {Capability.CHAT, Capability.STREAM, Capability.TOOLS, Capability.COMPLETIONS, Capability.EMBEDDINGS}
    )
    settings: DemoSettings

    async def chat(self, request: ChatRequest, model_id: str) -> ChatCompletion:
        prompt = _words(_message_text(m) for m in request.messages)
        tool = _forced_tool(request)
        if tool is not None:
            call = ToolCall(id=_new_id("call"), function=FunctionCall(name=tool, arguments="{}"))
            message = ResponseMessage(content=None, tool_calls=[call])
            choice = Choice(index=0, message=message, finish_reason="tool_calls")
            return ChatCompletion(
                id=_new_id("chatcmpl"),
                created=int(time.time()),
                model=model_id,
                choices=[choice],
                usage=_usage(prompt, 1),
            )
        words, finish = reply_words(request)
        n = request.n if isinstance(request.n, int) else 1
        choices = [
            Choice(index=i, message=ResponseMessage(content=" ".join(words)), finish_reason=finish)  # type: ignore[arg-type]
            for i in range(n)
        ]
        return ChatCompletion(
            id=_new_id("chatcmpl"),
            created=int(time.time()),
            model=model_id,
            choices=choices,
            usage=_usage(prompt, len(words) * n),
        )

    async def stream_chat(self, request: ChatRequest, model_id: str) -> AsyncIterator[ChatChunk]:
        created, chunk_id = int(time.time()), _new_id("chatcmpl")
        usage_field = None if request.include_usage else msgspec.UNSET

        def chunk(index: int, delta: Delta, finish: str | None = None) -> ChatChunk:
            choice = ChunkChoice(index=index, delta=delta, finish_reason=finish)  # type: ignore[arg-type]
            return ChatChunk(
                id=chunk_id, created=created, model=model_id, choices=[choice], usage=usage_field
            )

        tool = _forced_tool(request)
        choices = 1 if tool is not None else request.n if isinstance(request.n, int) else 1
        completion_tokens = 0
        for index in range(choices):
            yield chunk(index, Delta(role="assistant", content=""))
            if tool is not None:
                for delta in _tool_call_deltas(tool):
                    yield chunk(index, delta)
                words, finish = ["{}"], "tool_calls"
            else:
                words, finish = reply_words(request)
                for position, word in enumerate(words):
                    if self.settings.word_delay_ms:
                        await asyncio.sleep(self.settings.word_delay_ms / 1000)
                    yield chunk(index, Delta(content=word if position == 0 else " " + word))
            completion_tokens += len(words)
            yield chunk(index, Delta(), finish)
        if request.include_usage:
            prompt = _words(_message_text(m) for m in request.messages)
            yield ChatChunk(
                id=chunk_id,
                created=created,
                model=model_id,
                choices=[],
                usage=_usage(prompt, completion_tokens),
            )

    async def complete(self, request: CompletionRequest, model_id: str) -> Completion:
        prompt = request.prompt if isinstance(request.prompt, str) else " ".join(map(str, request.prompt))
        words, finish = _truncate(["You", "wrote:", *prompt.split()], request)
        choice = CompletionChoice(index=0, text=" ".join(words), finish_reason=finish)  # type: ignore[arg-type]
        return Completion(
            id=_new_id("cmpl"),
            created=int(time.time()),
            model=model_id,
            choices=[choice],
            usage=_usage(len(prompt.split()), len(words)),
        )

    async def stream_complete(self, request: CompletionRequest, model_id: str) -> AsyncIterator[Completion]:
        whole = await self.complete(request, model_id)
        words = whole.choices[0].text.split()
        for index, word in enumerate(words):
            text = word if index == 0 else " " + word
            yield msgspec.structs.replace(
                whole,
                choices=[CompletionChoice(index=0, text=text)],
                usage=None if request.include_usage else msgspec.UNSET,
            )
        last = CompletionChoice(index=0, text="", finish_reason=whole.choices[0].finish_reason)
        yield msgspec.structs.replace(
            whole, choices=[last], usage=None if request.include_usage else msgspec.UNSET
        )
        if request.include_usage:
            yield msgspec.structs.replace(whole, choices=[], usage=whole.usage)

    async def embed(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResponse:
        inputs = _embedding_inputs(request.input)
        size = request.dimensions if isinstance(request.dimensions, int) else DEFAULT_DIMENSIONS
        as_base64 = request.encoding_format == "base64"
        data = [
            Embedding(index=i, embedding=_encode_vector(unit_vector(text, size), as_base64))
            for i, text in enumerate(inputs)
        ]
        tokens = _words(inputs)
        return EmbeddingResponse(
            model=model_id, data=data, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
        )


def _embedding_inputs(value: str | list[Any]) -> list[str]:
    """Texts to embed; token ids are embedded by their decimal spelling (the demo has no vocabulary)."""
    if isinstance(value, str):
        return [value]
    if value and isinstance(value[0], int):
        return [" ".join(map(str, value))]
    return [item if isinstance(item, str) else " ".join(map(str, item)) for item in value]


def unit_vector(text: str, size: int) -> list[float]:
    """A deterministic unit-norm vector derived from the text."""
    seed = hashlib.sha256(text.encode()).digest()
    stream = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(size // 8 + 1))
    raw = [b - 127.5 for b in stream[:size]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def _encode_vector(vector: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


DEMO = ProviderSpec("demo", DemoSettings, DemoProvider)
