"""Token estimates made before a call, to reserve against token limits (the provider's reported
usage settles them afterwards). Providers tokenize differently and offline BPE files are not
bundled, so the estimate is byte-based: about four UTF-8 bytes per token, plus a few tokens of
framing per chat message, as OpenAI's chat format adds."""

from __future__ import annotations

from typing import Any

import msgspec

from modelyard.schema.chat import ChatRequest, Message, TextPart
from modelyard.schema.completions import CompletionRequest
from modelyard.schema.embeddings import EmbeddingRequest

BYTES_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
_ENCODER = msgspec.json.Encoder()


def text_tokens(text: str) -> int:
    return -(-len(text.encode("utf-8", "replace")) // BYTES_PER_TOKEN)


def _message_tokens(message: Message) -> int:
    content = message.content
    if isinstance(content, str):
        tokens = text_tokens(content)
    elif isinstance(content, list):
        tokens = sum(text_tokens(part.text) for part in content if isinstance(part, TextPart))
    else:
        tokens = 0
    if isinstance(message.tool_calls, list):
        tokens += -(-len(_ENCODER.encode(message.tool_calls)) // BYTES_PER_TOKEN)
    return tokens + MESSAGE_OVERHEAD


def _inputs_tokens(value: Any) -> int:
    """A prompt or embedding input: a string, a list of strings, token ids, or lists of token ids."""
    if isinstance(value, str):
        return text_tokens(value)
    if isinstance(value, list):
        if all(isinstance(item, int) for item in value):
            return len(value)
        return sum(_inputs_tokens(item) for item in value)
    return 0


def chat_tokens(request: ChatRequest) -> int:
    tokens = sum(_message_tokens(message) for message in request.messages)
    if isinstance(request.tools, list):
        tokens += -(-len(_ENCODER.encode(request.tools)) // BYTES_PER_TOKEN)
    return tokens


def completion_tokens(request: CompletionRequest) -> int:
    return _inputs_tokens(request.prompt)


def embedding_tokens(request: EmbeddingRequest) -> int:
    return _inputs_tokens(request.input)
