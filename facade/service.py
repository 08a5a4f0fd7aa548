"""The OpenAI-compatible REST surface as a gRPC service of raw HTTP bodies (transcoded by Envoy)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias
from urllib.parse import unquote

import grpc
import msgspec
from google.api import httpbody_pb2
from modelyard.gateway import Gateway
from modelyard.schema.chat import ChatRequest
from modelyard.schema.completions import CompletionRequest
from modelyard.schema.decode import decode_request
from modelyard.schema.embeddings import EmbeddingRequest
from modelyard.tenancy import caller
from modelyard.v1 import openai_pb2, openai_pb2_grpc

from . import sse

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
_ENCODER = msgspec.json.Encoder()
HttpBody: TypeAlias = httpbody_pb2.HttpBody


def json_body(payload: Any) -> HttpBody:
    return HttpBody(content_type=JSON, data=_ENCODER.encode(payload))


async def event_stream(chunks: AsyncIterator[Any]) -> AsyncIterator[HttpBody]:
    async for data in sse.render(chunks):
        yield HttpBody(content_type=EVENT_STREAM, data=data)


class OpenAIFacade(openai_pb2_grpc.OpenAIServicer):
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def ChatCompletions(
        self, request: HttpBody, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[HttpBody]:
        chat = decode_request(request.data, ChatRequest)
        if chat.stream:
            async for body in event_stream(await self._gateway.open_chat_stream(caller(), chat)):
                yield body
        else:
            yield json_body(await self._gateway.chat(caller(), chat))

    async def Completions(
        self, request: HttpBody, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[HttpBody]:
        completion = decode_request(request.data, CompletionRequest)
        if completion.stream:
            async for body in event_stream(await self._gateway.open_completion_stream(caller(), completion)):
                yield body
        else:
            yield json_body(await self._gateway.complete(caller(), completion))

    async def Embeddings(
        self, request: HttpBody, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[HttpBody]:
        embedding = decode_request(request.data, EmbeddingRequest)
        yield json_body(await self._gateway.embed(caller(), embedding))

    async def ListModels(
        self, request: openai_pb2.ListModelsHttpRequest, context: grpc.aio.ServicerContext
    ) -> HttpBody:
        return json_body(await self._gateway.list_models(caller()))

    async def RetrieveModel(
        self, request: openai_pb2.RetrieveModelHttpRequest, context: grpc.aio.ServicerContext
    ) -> HttpBody:
        # Clients percent-encode the slash of aliases such as `demo/chat`; the transcoder does not decode it.
        return json_body(await self._gateway.model(caller(), unquote(request.model)))
