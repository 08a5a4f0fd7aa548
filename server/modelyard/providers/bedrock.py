"""AWS Bedrock Runtime: Converse (chat, tools, vision, JSON via a forced tool), ConverseStream (AWS
event-stream frames), InvokeModel for Titan / Cohere embeddings.

Requests are signed with SigV4 (`sigv4`, service `bedrock`) from the access keys, or carry a Bedrock
API key as a bearer token. Conversions live in `bedrock_convert`, frame decoding in `eventstream`;
this module holds the stream translator (pure: one frame in, chunks out) and the adapter's I/O.
Legacy completions: InvokeModel with the family's native text body (Anthropic Claude v2/instant text
completion, Titan Text, Cohere Command, AI21 Jurassic-2, Meta Llama, Mistral); any other model gets
its prompt as one user turn through Converse.
Dropped (Converse has no such field): seed, user, presence/frequency penalties, logit_bias, logprobs,
parallel_tool_calls, metadata; refused with a 400: n > 1, image URLs (only base64 data URLs), audio
and file parts, token-id prompts/inputs. top_k and unknown extras go to additionalModelRequestFields.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar, cast

import aiohttp
import msgspec
import yarl
from msgspec import UNSET
from pydantic import SecretStr, model_validator

from modelyard.errors import StreamError
from modelyard.providers.base import Capability, Provider, ProviderSettings, ProviderSpec
from modelyard.providers.bedrock_convert import (
    ConverseResponse,
    TokenUsage,
    build_converse,
    completion_id,
    finish_reason,
    json_mode,
    parse_error,
    stream_exception,
    to_completion,
    to_usage,
    unsupported_parameter,
)
from modelyard.providers.bedrock_invoke import (
    CohereEmbeddings,
    TitanEmbedding,
    cohere_body,
    cohere_vectors,
    completion_prompts,
    embedding_family,
    embedding_texts,
    text_body,
    text_family,
    text_finish,
    text_result,
    titan_body,
    to_embeddings,
    to_text_completion,
)
from modelyard.providers.eventstream import EventMessage, EventStreamDecoder
from modelyard.providers.fields import arg, url
from modelyard.providers.openai import decode_body
from modelyard.providers.sigv4 import AwsCredentials, encode_path_segment, sign
from modelyard.schema.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    ChunkChoice,
    Delta,
    FinishReason,
    FunctionCallDelta,
    Message,
    ToolCallDelta,
)
from modelyard.schema.completions import Completion, CompletionChoice, CompletionRequest
from modelyard.schema.embeddings import EmbeddingRequest, EmbeddingResponse
from modelyard.transport import UpstreamResponse

R = TypeVar("R")
_ENCODER = msgspec.json.Encoder()


class BedrockSettings(ProviderSettings):
    access_key_id: str | None = arg(
        "access_key_id", "accessKeyId", "accessKeyID", default=None, pattern=r"^[A-Z0-9]{16,128}$"
    )
    secret_access_key: SecretStr | None = arg("secret_access_key", "secretAccessKey", default=None)
    region: str = arg("region", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    session_token: SecretStr | None = arg("session_token", "sessionToken", default=None)
    api_key: SecretStr | None = arg("api_key", "apiKey", "apikey", default=None)
    """A Bedrock API key, sent as a bearer token instead of SigV4 signing."""
    base_url: str | None = url("base_url", "baseURL", "baseUrl", "endpoint_url", default=None)
    """Endpoint override; default https://bedrock-runtime.{region}.amazonaws.com."""

    @model_validator(mode="after")
    def _one_auth_method(self) -> BedrockSettings:
        keys = self.access_key_id is not None, self.secret_access_key is not None
        if self.api_key is not None:
            if any(keys) or self.session_token is not None:
                raise ValueError("give either api_key or access_key_id/secret_access_key, not both")
        elif not all(keys):
            raise ValueError("access_key_id and secret_access_key (or api_key) are required")
        return self

    @property
    def endpoint(self) -> str:
        return (self.base_url or f"https://bedrock-runtime.{self.region}.amazonaws.com").rstrip("/")


class StreamTranslator:
    """ConverseStream events → ChatChunks, one frame at a time (no buffering)."""

    def __init__(
        self, provider: str, model_id: str, *, include_usage: bool, json_mode: bool, secrets: list[str]
    ) -> None:
        self.provider = provider
        self.model = model_id
        self.include_usage = include_usage
        self.json_mode = json_mode
        self.secrets = secrets
        self.id = completion_id(None)
        self.created = int(time.time())
        self.tool_index: dict[int, int] = {}
        self.usage: TokenUsage | None = None
        self.finish: FinishReason | None = None
        self.started = False
        self.done = False

    def _chunk(self, delta: Delta, finish: FinishReason | None = None) -> ChatChunk:
        return ChatChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)],
            usage=None if self.include_usage else UNSET,
        )

    def feed(self, message: EventMessage) -> list[ChatChunk]:
        if message.message_type == "exception":
            kind = str(message.headers.get(":exception-type", "internalServerException"))
            raise stream_exception(self.provider, kind, message.payload, self.secrets)
        if message.message_type == "error":
            code = str(message.headers.get(":error-code", "internalServerException"))
            text = str(message.headers.get(":error-message", ""))
            raise stream_exception(self.provider, code, _ENCODER.encode({"message": text}), self.secrets)
        try:
            event = msgspec.json.decode(message.payload, type=dict[str, Any])
        except msgspec.MsgspecError:
            raise StreamError(
                f"Provider '{self.provider}' sent a stream event that is not valid JSON.",
                status=502,
                code="bad_upstream_response",
                provider=self.provider,
            ) from None
        chunks = self._translate(message.event_type, event)
        if chunks and not self.started:
            self.started = True
            chunks.insert(0, self._chunk(Delta(role="assistant", content="")))
        return chunks

    def _translate(self, kind: str, event: dict[str, Any]) -> list[ChatChunk]:
        index = event.get("contentBlockIndex", 0)
        if kind == "contentBlockStart":
            use = (event.get("start") or {}).get("toolUse")
            if not isinstance(use, dict) or self.json_mode:
                return []
            position = self.tool_index[index] = len(self.tool_index)
            opening = ToolCallDelta(
                index=position,
                id=use.get("toolUseId", ""),
                type="function",
                function=FunctionCallDelta(name=use.get("name", ""), arguments=""),
            )
            return [self._chunk(Delta(tool_calls=[opening]))]
        if kind == "contentBlockDelta":
            delta = event.get("delta") or {}
            if isinstance(delta.get("text"), str) and delta["text"]:
                return [self._chunk(Delta(content=delta["text"]))]
            fragment = (delta.get("toolUse") or {}).get("input")
            if isinstance(fragment, str) and fragment:
                if self.json_mode:
                    return [self._chunk(Delta(content=fragment))]
                if index in self.tool_index:
                    call = ToolCallDelta(
                        index=self.tool_index[index], function=FunctionCallDelta(arguments=fragment)
                    )
                    return [self._chunk(Delta(tool_calls=[call]))]
            return []
        if kind == "messageStop":
            self.finish = finish_reason(event.get("stopReason"), self.json_mode)
            return [self._chunk(Delta(), self.finish)]
        if kind == "metadata":
            self.usage = msgspec.convert(event.get("usage") or {}, TokenUsage)
            return self.close() if self.finish is not None else []
        return []  # messageStart, contentBlockStop, reasoning deltas

    def close(self) -> list[ChatChunk]:
        """The usage chunk, once the message has stopped (metadata, or the end of the stream)."""
        if self.done:
            return []
        self.done = True
        if not self.include_usage:
            return []
        return [
            ChatChunk(
                id=self.id, created=self.created, model=self.model, choices=[], usage=to_usage(self.usage)
            )
        ]


class BedrockProvider(Provider):
    capabilities = frozenset(
        {
            Capability.CHAT,
            Capability.STREAM,
            Capability.TOOLS,
            Capability.VISION,
            Capability.JSON_MODE,
            Capability.EMBEDDINGS,
            Capability.COMPLETIONS,
        }
    )
    settings: BedrockSettings

    def _secrets(self) -> list[str]:
        values = [self.settings.api_key, self.settings.secret_access_key, self.settings.session_token]
        return [value.get_secret_value() for value in values if value is not None]

    def _url(self, model_id: str, action: str) -> str:
        return f"{self.settings.endpoint}/model/{encode_path_segment(model_id)}/{action}"

    @staticmethod
    def _wire(target: str) -> str:
        """The URL as signed: already encoded, so aiohttp must not re-normalise `%3A` to `:`."""
        return cast(str, yarl.URL(target, encoded=True))

    def _headers(self, target: str, body: bytes, accept: str) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": accept}
        settings = self.settings
        if settings.api_key is not None:
            return {**headers, "authorization": f"Bearer {settings.api_key.get_secret_value()}"}
        assert settings.access_key_id is not None and settings.secret_access_key is not None
        credentials = AwsCredentials(
            settings.access_key_id,
            settings.secret_access_key.get_secret_value(),
            settings.session_token.get_secret_value() if settings.session_token else None,
        )
        return sign("POST", target, headers, body, credentials, settings.region)

    async def _call(
        self, model_id: str, action: str, body: dict[str, Any], kind: type[R]
    ) -> tuple[R, UpstreamResponse]:
        payload = _ENCODER.encode(body)
        target = self._url(model_id, action)
        headers = self._headers(target, payload, "application/json")
        response = await self.transport.post(self.name, self._wire(target), headers, payload)
        if response.status >= 400:
            raise parse_error(self.name, response.status, response.headers, response.body, self._secrets())
        return decode_body(self.name, response.body, kind), response

    async def chat(self, request: ChatRequest, model_id: str) -> ChatCompletion:
        body = build_converse(request, self.name)
        result, response = await self._call(model_id, "converse", body, ConverseResponse)
        return to_completion(result, model_id, response.headers.get("x-amzn-requestid"), json_mode(request))

    def stream_chat(self, request: ChatRequest, model_id: str) -> AsyncIterator[ChatChunk]:
        body = build_converse(request, self.name)
        return self._stream(request, model_id, _ENCODER.encode(body))

    async def _stream(self, request: ChatRequest, model_id: str, payload: bytes) -> AsyncIterator[ChatChunk]:
        target = self._url(model_id, "converse-stream")
        headers = self._headers(target, payload, "application/vnd.amazon.eventstream")
        translator = StreamTranslator(
            self.name,
            model_id,
            include_usage=request.include_usage,
            json_mode=json_mode(request),
            secrets=self._secrets(),
        )
        decoder = EventStreamDecoder(self.name)
        async for message in self._frames(target, headers, payload, decoder):
            for chunk in translator.feed(message):
                yield chunk
            if translator.done:
                return
        if translator.finish is not None and not decoder.pending:
            for chunk in translator.close():
                yield chunk
            return
        raise StreamError(
            f"Provider '{self.name}' ended the stream before messageStop.",
            status=502,
            code="upstream_disconnected",
            provider=self.name,
        )

    async def _frames(
        self, target: str, headers: dict[str, str], payload: bytes, decoder: EventStreamDecoder
    ) -> AsyncIterator[EventMessage]:
        """The event-stream messages of a streaming call, as they arrive."""
        async with self.transport.stream(self.name, self._wire(target), headers, payload) as response:
            if response.status >= 400:
                body = await response.read()
                raise parse_error(self.name, response.status, response.headers, body, self._secrets())
            try:
                async for data in response.content.iter_any():
                    for message in decoder.feed(data):
                        yield message
            except (TimeoutError, aiohttp.ClientError):
                raise StreamError(
                    f"Provider '{self.name}' closed the connection before the response was complete.",
                    status=502,
                    code="upstream_disconnected",
                    provider=self.name,
                ) from None

    async def embed(self, request: EmbeddingRequest, model_id: str) -> EmbeddingResponse:
        family = embedding_family(model_id)
        texts = embedding_texts(request, self.name)
        if family == "titan":
            results = await _bounded(
                *(
                    self._call(model_id, "invoke", titan_body(request, model_id, t), TitanEmbedding)
                    for t in texts
                )
            )
            vectors = [result.embedding for result, _ in results]
            tokens = sum(result.inputTextTokenCount for result, _ in results)
            return to_embeddings(model_id, vectors, tokens, request.encoding_format)
        if family == "cohere":
            result, response = await self._call(
                model_id, "invoke", cohere_body(request, texts), CohereEmbeddings
            )
            tokens = int(response.headers.get("x-amzn-bedrock-input-token-count", "0") or 0)
            return to_embeddings(model_id, cohere_vectors(result), tokens, request.encoding_format)
        raise unsupported_parameter(
            f"Provider '{self.name}' (type bedrock) embeds with Titan (amazon.titan-embed-*) and Cohere "
            f"(cohere.embed-*) models only.",
            "model",
        )

    @staticmethod
    def _as_chat(request: CompletionRequest, prompt: str, stream: bool) -> ChatRequest:
        return ChatRequest(
            model=request.model,
            messages=[Message(role="user", content=prompt)],
            stream=stream,
            stream_options=request.stream_options,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            stop=request.stop,
            extras=request.extras,
        )

    async def complete(self, request: CompletionRequest, model_id: str) -> Completion:
        prompts = completion_prompts(request, self.name)
        family = text_family(model_id)
        if family is None:
            chats = await _bounded(*(self.chat(self._as_chat(request, p, False), model_id) for p in prompts))
            results = [(c.choices[0].message.content or "", c.choices[0].finish_reason) for c in chats]
            usage = [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chats if c.usage]
            completion = to_text_completion(
                model_id, None, [], sum(u[0] for u in usage), sum(u[1] for u in usage)
            )
            completion.choices = [
                CompletionChoice(index=i, text=text, finish_reason=finish)
                for i, (text, finish) in enumerate(results)
            ]
            return completion
        calls = await _bounded(
            *(self._call(model_id, "invoke", text_body(family, request, p), dict[str, Any]) for p in prompts)
        )
        prompt_tokens = sum(_tokens(r.headers, b, "input") for b, r in calls)
        output_tokens = sum(_tokens(r.headers, b, "output") for b, r in calls)
        request_id = calls[0][1].headers.get("x-amzn-requestid")
        return to_text_completion(
            model_id, request_id, [text_result(b) for b, _ in calls], prompt_tokens, output_tokens
        )

    def stream_complete(self, request: CompletionRequest, model_id: str) -> AsyncIterator[Completion]:
        prompts = completion_prompts(request, self.name)
        if len(prompts) != 1:
            raise unsupported_parameter(
                f"Provider '{self.name}' (type bedrock) streams one prompt at a time.", "prompt"
            )
        family = text_family(model_id)
        if family is None:
            return self._stream_complete_by_converse(request, model_id, prompts[0])
        return self._stream_complete(request, model_id, family, prompts[0])

    async def _stream_complete_by_converse(
        self, request: CompletionRequest, model_id: str, prompt: str
    ) -> AsyncIterator[Completion]:
        async for chunk in self.stream_chat(self._as_chat(request, prompt, True), model_id):
            choices = [
                CompletionChoice(index=0, text=c.delta.content or "", finish_reason=c.finish_reason)
                for c in chunk.choices
            ]
            yield Completion(
                id="cmpl-" + chunk.id.removeprefix("chatcmpl-"),
                created=chunk.created,
                model=model_id,
                choices=choices,
                usage=chunk.usage,
            )

    async def _stream_complete(
        self, request: CompletionRequest, model_id: str, family: str, prompt: str
    ) -> AsyncIterator[Completion]:
        payload = _ENCODER.encode(text_body(family, request, prompt))
        target = self._url(model_id, "invoke-with-response-stream")
        headers = self._headers(target, payload, "application/json")
        base = to_text_completion(model_id, None, [], 0, 0)
        usage_field: Any = None if request.include_usage else UNSET
        finished = False
        metrics: dict[str, Any] = {}
        async for message in self._frames(target, headers, payload, EventStreamDecoder(self.name)):
            if message.message_type != "event":
                kind = str(message.headers.get(":exception-type") or message.headers.get(":error-code") or "")
                raise stream_exception(
                    self.name, kind or "internalServerException", message.payload, self._secrets()
                )
            try:
                wrapper = msgspec.json.decode(message.payload, type=dict[str, Any])
                data = msgspec.json.decode(base64.b64decode(wrapper.get("bytes") or ""), type=dict[str, Any])
            except (msgspec.MsgspecError, ValueError):
                raise StreamError(
                    f"Provider '{self.name}' sent a stream chunk that is not valid JSON.",
                    status=502,
                    code="bad_upstream_response",
                    provider=self.name,
                ) from None
            metrics = data.get("amazon-bedrock-invocationMetrics") or metrics
            text, stop = text_result(data)
            finished = finished or stop is not None
            finish = text_finish(stop) if stop is not None else None
            if text or finish:
                choice = CompletionChoice(index=0, text=text, finish_reason=finish)
                yield msgspec.structs.replace(base, choices=[choice], usage=usage_field)
        if not finished:
            raise StreamError(
                f"Provider '{self.name}' ended the stream before a stop reason.",
                status=502,
                code="upstream_disconnected",
                provider=self.name,
            )
        if request.include_usage:
            tokens = int(metrics.get("inputTokenCount", 0)), int(metrics.get("outputTokenCount", 0))
            yield msgspec.structs.replace(
                to_text_completion(model_id, None, [], *tokens), id=base.id, choices=[]
            )


MAX_PARALLEL_CALLS = 8
"""Upstream calls one request may have in flight (Titan embeds one input per call)."""


async def _bounded(*calls: Awaitable[R]) -> list[R]:
    gate = asyncio.Semaphore(MAX_PARALLEL_CALLS)

    async def one(call: Awaitable[R]) -> R:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(call) for call in calls)))


def _tokens(headers: Any, body: dict[str, Any], which: str) -> int:
    """Token counts from InvokeModel's headers, else from the body fields of the family."""
    value = headers.get(f"x-amzn-bedrock-{which}-token-count")
    if value is not None and str(value).isdigit():
        return int(value)
    keys = ("inputTextTokenCount", "prompt_token_count") if which == "input" else ("generation_token_count",)
    found = next((body[k] for k in keys if isinstance(body.get(k), int)), None)
    if found is None and which == "output":
        found = sum(r.get("tokenCount", 0) for r in body.get("results") or [] if isinstance(r, dict))
    return int(found or 0)


BEDROCK = ProviderSpec("bedrock", BedrockSettings, BedrockProvider)
