"""Conversions shared by the typed chat, completion and embedding APIs."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from msgspec import UNSET

from modelyard.schema.common import CompletionTokensDetails, PromptTokensDetails, Usage
from modelyard.v1 import common_pb2 as pb

_FINISH = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
    "content_filter": pb.FINISH_REASON_CONTENT_FILTER,
    "function_call": pb.FINISH_REASON_FUNCTION_CALL,
}


def optional(message: Message, name: str) -> Any:
    """The field's value if the (proto3 optional) field is set, else UNSET."""
    return getattr(message, name) if message.HasField(name) else UNSET


def finish_reason_to_proto(reason: str | None) -> pb.FinishReason.ValueType:
    return _FINISH.get(reason or "", pb.FINISH_REASON_UNSPECIFIED)


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def usage_to_proto(usage: Usage | Any | None) -> pb.Usage | None:
    if not isinstance(usage, Usage):
        return None
    out = pb.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )
    prompt = usage.prompt_tokens_details
    if isinstance(prompt, PromptTokensDetails):
        out.prompt_tokens_details.cached_tokens = _int(prompt.cached_tokens)
        out.prompt_tokens_details.audio_tokens = _int(prompt.audio_tokens)
    completion = usage.completion_tokens_details
    if isinstance(completion, CompletionTokensDetails):
        details = out.completion_tokens_details
        details.reasoning_tokens = _int(completion.reasoning_tokens)
        details.audio_tokens = _int(completion.audio_tokens)
        details.accepted_prediction_tokens = _int(completion.accepted_prediction_tokens)
        details.rejected_prediction_tokens = _int(completion.rejected_prediction_tokens)
    return out
