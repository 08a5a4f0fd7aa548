"""Typed completions and embeddings (proto) <-> the gateway's schema."""

from __future__ import annotations

import base64
import struct
from typing import Any

from msgspec import UNSET

from modelyard.errors import invalid_request
from modelyard.schema import completions as c
from modelyard.schema import embeddings as e
from modelyard.schema.common import StreamOptions
from modelyard.service.convert_common import finish_reason_to_proto, optional, usage_to_proto
from modelyard.service.structs import dict_to_struct, struct_to_dict
from modelyard.v1 import completions_pb2, embeddings_pb2


def _prompt(request: completions_pb2.CompletionRequest) -> c.Prompt:
    if request.prompt and request.prompt_tokens:
        raise invalid_request("Set either 'prompt' or 'prompt_tokens', not both.", param="prompt")
    if request.prompt_tokens:
        token_lists = [list(t.ids) for t in request.prompt_tokens]
        return token_lists[0] if len(token_lists) == 1 else token_lists
    if not request.prompt:
        raise invalid_request("You must provide a prompt.", param="prompt")
    return request.prompt[0] if len(request.prompt) == 1 else list(request.prompt)


def completion_request_from_proto(
    request: completions_pb2.CompletionRequest, stream: bool
) -> c.CompletionRequest:
    return c.CompletionRequest(
        model=request.model,
        prompt=_prompt(request),
        stream=stream,
        stream_options=StreamOptions(include_usage=request.stream_options.include_usage)
        if request.HasField("stream_options")
        else UNSET,
        max_tokens=optional(request, "max_tokens"),
        temperature=optional(request, "temperature"),
        top_p=optional(request, "top_p"),
        top_k=optional(request, "top_k"),
        n=optional(request, "n"),
        stop=list(request.stop) or UNSET,
        presence_penalty=optional(request, "presence_penalty"),
        frequency_penalty=optional(request, "frequency_penalty"),
        logit_bias=dict(request.logit_bias) or UNSET,
        logprobs=optional(request, "logprobs"),
        echo=optional(request, "echo"),
        best_of=optional(request, "best_of"),
        suffix=request.suffix or UNSET,
        seed=optional(request, "seed"),
        user=request.user or UNSET,
        extras=struct_to_dict(request.extra_body) if request.HasField("extra_body") else {},
    )


def _completion_logprobs(logprobs: Any) -> completions_pb2.CompletionLogprobs | None:
    if not isinstance(logprobs, c.CompletionLogprobs):
        return None

    def listed(value: Any) -> list[Any]:
        return value if isinstance(value, list) else []

    return completions_pb2.CompletionLogprobs(
        tokens=listed(logprobs.tokens),
        token_logprobs=listed(logprobs.token_logprobs),
        top_logprobs=[dict_to_struct(top) for top in listed(logprobs.top_logprobs)],
        text_offset=listed(logprobs.text_offset),
    )


def completion_to_proto(result: c.Completion) -> completions_pb2.Completion:
    return completions_pb2.Completion(
        id=result.id,
        created=result.created,
        model=result.model,
        choices=[
            completions_pb2.CompletionChoice(
                index=choice.index,
                text=choice.text,
                finish_reason=finish_reason_to_proto(choice.finish_reason),
                logprobs=_completion_logprobs(choice.logprobs),
            )
            for choice in result.choices
        ],
        usage=usage_to_proto(result.usage),
        system_fingerprint=result.system_fingerprint if isinstance(result.system_fingerprint, str) else "",
    )


def embedding_request_from_proto(request: embeddings_pb2.EmbeddingRequest) -> e.EmbeddingRequest:
    if request.input and request.input_tokens:
        raise invalid_request("Set either 'input' or 'input_tokens', not both.", param="input")
    value: e.EmbeddingInput
    if request.input_tokens:
        lists = [list(t.ids) for t in request.input_tokens]
        value = lists[0] if len(lists) == 1 else lists
    elif request.input:
        value = request.input[0] if len(request.input) == 1 else list(request.input)
    else:
        raise invalid_request("You must provide an input.", param="input")
    # The typed API always receives floats; base64 is packed into bytes on the way out.
    return e.EmbeddingRequest(
        model=request.model,
        input=value,
        dimensions=request.dimensions if request.HasField("dimensions") else UNSET,
        user=request.user or UNSET,
    )


def embedding_response_to_proto(
    result: e.EmbeddingResponse, encoding: int
) -> embeddings_pb2.EmbeddingResponse:
    packed = encoding == embeddings_pb2.ENCODING_FORMAT_BASE64
    data = []
    for item in result.data:
        vector = item.embedding if isinstance(item.embedding, list) else _unpack(item.embedding)
        if packed:
            data.append(
                embeddings_pb2.Embedding(
                    index=item.index, embedding_bytes=struct.pack(f"<{len(vector)}f", *vector)
                )
            )
        else:
            data.append(embeddings_pb2.Embedding(index=item.index, embedding=vector))
    usage = embeddings_pb2.EmbeddingUsage(
        prompt_tokens=result.usage.prompt_tokens, total_tokens=result.usage.total_tokens
    )
    return embeddings_pb2.EmbeddingResponse(model=result.model, data=data, usage=usage)


def _unpack(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))
