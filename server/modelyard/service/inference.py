"""The typed Inference service: thin proto-in → gateway → proto-out handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc

from modelyard.gateway import Gateway
from modelyard.schema.decode import validate
from modelyard.service import convert_chat, convert_other
from modelyard.tenancy import caller
from modelyard.v1 import (
    chat_pb2,
    completions_pb2,
    embeddings_pb2,
    inference_pb2,
    inference_pb2_grpc,
)

Context: TypeAlias = grpc.aio.ServicerContext


class InferenceService(inference_pb2_grpc.InferenceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def CreateChatCompletion(
        self, request: chat_pb2.ChatCompletionRequest, context: Context
    ) -> chat_pb2.ChatCompletion:
        chat = convert_chat.chat_request_from_proto(request, stream=False)
        validate(chat)
        return convert_chat.completion_to_proto(await self._gateway.chat(caller(), chat))

    async def StreamChatCompletion(
        self, request: chat_pb2.ChatCompletionRequest, context: Context
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        chat = convert_chat.chat_request_from_proto(request, stream=True)
        validate(chat)
        async for chunk in await self._gateway.open_chat_stream(caller(), chat):
            yield convert_chat.chunk_to_proto(chunk)

    async def CreateCompletion(
        self, request: completions_pb2.CompletionRequest, context: Context
    ) -> completions_pb2.Completion:
        completion = convert_other.completion_request_from_proto(request, stream=False)
        validate(completion)
        return convert_other.completion_to_proto(await self._gateway.complete(caller(), completion))

    async def StreamCompletion(
        self, request: completions_pb2.CompletionRequest, context: Context
    ) -> AsyncIterator[completions_pb2.Completion]:
        completion = convert_other.completion_request_from_proto(request, stream=True)
        validate(completion)
        async for chunk in await self._gateway.open_completion_stream(caller(), completion):
            yield convert_other.completion_to_proto(chunk)

    async def CreateEmbedding(
        self, request: embeddings_pb2.EmbeddingRequest, context: Context
    ) -> embeddings_pb2.EmbeddingResponse:
        embedding = convert_other.embedding_request_from_proto(request)
        validate(embedding)
        result = await self._gateway.embed(caller(), embedding)
        return convert_other.embedding_response_to_proto(result, request.encoding_format)

    async def ListModels(
        self, request: inference_pb2.ListModelsRequest, context: Context
    ) -> inference_pb2.ListModelsResponse:
        models = await self._gateway.list_models(caller())
        return inference_pb2.ListModelsResponse(
            data=[
                inference_pb2.Model(id=m.id, created=m.created, owned_by=m.owned_by, providers=m.providers)
                for m in models.data
            ]
        )
