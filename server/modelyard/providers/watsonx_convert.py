"""Pure conversions between the gateway's OpenAI shapes and IBM watsonx.ai's `/ml/v1/text/*` API.

Chat (`/ml/v1/text/chat[_stream]`) is OpenAI-like: roles, content parts and tool calls keep their
shapes; `developer` becomes `system`, a named tool choice is `tool_choice` and the string forms are
`tool_choice_option`. Completions use `/ml/v1/text/generation[_stream]` (one `input`, parameters
under `parameters`), embeddings `/ml/v1/text/embeddings` (`inputs`, `results[].embedding`).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from typing import Any

import msgspec

from modelyard.errors import ClientError
from modelyard.schema.chat import (
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    ChunkChoice,
    Delta,
    ImageUrlPart,
    Message,
    NamedToolChoice,
    TextPart,
)
from modelyard.schema.common import Usage
from modelyard.schema.completions import Completion, CompletionChoice, CompletionRequest
from modelyard.schema.embeddings import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage

Scope = Mapping[str, str]
"""{"project_id": …} or {"space_id": …}: every data-plane body carries exactly one."""

# Chat parameters that keep their name and meaning on watsonx (TextChatParameters).
_CHAT_PARAMETERS = (
    "temperature",
    "top_p",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "seed",
)
# Extras watsonx understands; anything else is dropped (watsonx rejects unknown fields).
CHAT_EXTRAS = frozenset(
    {
        "time_limit",
        "guided_choice",
        "guided_regex",
        "guided_grammar",
        "guided_json",
        "chat_template_kwargs",
        "reasoning_effort",
        "include_reasoning",
        "repetition_penalty",
        "length_penalty",
    }
)
GENERATION_EXTRAS = frozenset(
    {
        "decoding_method",
        "length_penalty",
        "min_new_tokens",
        "repetition_penalty",
        "time_limit",
        "truncate_input_tokens",
        "include_stop_sequence",
        "return_options",
        "prompt_variables",
    }
)
EMBEDDING_EXTRAS = frozenset({"truncate_input_tokens", "return_options"})

_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "function_call": "tool_calls",
    "eos_token": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "token_limit": "length",
    "time_limit": "length",
}


def _refuse(message: str, param: str) -> ClientError:
    return ClientError(message, status=400, param=param, code="unsupported_parameter")


def _extras(extras: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    return {
        key: msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value
        for key, value in extras.items()
        if key in allowed
    }


def _set(value: Any) -> bool:
    return value is not msgspec.UNSET and value is not None


def _stops(stop: Any) -> list[str] | None:
    if isinstance(stop, str):
        return [stop] if stop else None
    if isinstance(stop, list):
        return [s for s in stop if s] or None
    return None


# --------------------------------------------------------------------------------------------------
# Chat


def _content(message: Message, provider: str) -> Any:
    content = message.content
    if content is msgspec.UNSET or content is None or isinstance(content, str):
        return None if content is msgspec.UNSET else content
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, ImageUrlPart):
            image: dict[str, Any] = {"url": part.image_url.url}
            if _set(part.image_url.detail):
                image["detail"] = part.image_url.detail
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _refuse(
                f"Provider '{provider}' (watsonx.ai) accepts only text and image_url content parts.",
                "messages",
            )
    if message.role in ("user",):
        return parts
    # system, assistant and tool messages take a string on watsonx.
    if any(p["type"] != "text" for p in parts):
        raise _refuse(f"Provider '{provider}' (watsonx.ai) accepts images only in user messages.", "messages")
    return "".join(p["text"] for p in parts)


def chat_message(message: Message, provider: str) -> dict[str, Any]:
    role = "system" if message.role == "developer" else message.role
    out: dict[str, Any] = {"role": role}
    content = _content(message, provider)
    if content is not None or role != "assistant":
        out["content"] = content if content is not None else ""
    if _set(message.name) and role in ("user", "assistant", "system"):
        out["name"] = message.name
    if role == "assistant" and isinstance(message.tool_calls, list) and message.tool_calls:
        out["tool_calls"] = [msgspec.to_builtins(call) for call in message.tool_calls]
    if role == "tool" and _set(message.tool_call_id):
        out["tool_call_id"] = message.tool_call_id
    return out


def chat_payload(request: ChatRequest, model_id: str, scope: Scope, provider: str) -> dict[str, Any]:
    """The body of POST /ml/v1/text/chat (and chat_stream: same body)."""
    body: dict[str, Any] = {
        **_extras(request.extras, CHAT_EXTRAS),
        "model_id": model_id,
        "messages": [chat_message(m, provider) for m in request.messages],
    }
    for name in _CHAT_PARAMETERS:
        value = getattr(request, name)
        if _set(value):
            body[name] = value
    stops = _stops(request.stop)
    if stops:
        body["stop"] = stops
    if isinstance(request.tools, list) and request.tools:
        body["tools"] = [msgspec.to_builtins(tool) for tool in request.tools]
        choice = request.tool_choice
        if isinstance(choice, NamedToolChoice):
            body["tool_choice"] = {"type": "function", "function": {"name": choice.function.name}}
        elif isinstance(choice, str):
            body["tool_choice_option"] = choice
    if _set(request.response_format):
        body["response_format"] = msgspec.to_builtins(request.response_format)
    body.update(scope)
    return body


def usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    total = raw.get("total_tokens")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(total) if isinstance(total, int) else prompt + completion,
    )


def finish_reason(raw: Any) -> str | None:
    if raw is None or raw == "not_finished":
        return None
    return _FINISH_REASONS.get(str(raw), "stop")


def chat_completion(body: dict[str, Any], model_id: str) -> ChatCompletion:
    """A watsonx chat response (OpenAI-like) → the gateway's ChatCompletion."""
    choices = []
    for position, choice in enumerate(body.get("choices") or []):
        message = dict(choice.get("message") or {})
        message.setdefault("content", None)
        message["role"] = "assistant"
        for key in list(message):
            if key not in ("role", "content", "tool_calls", "refusal"):
                message.pop(key)
        if not message.get("tool_calls"):
            message.pop("tool_calls", None)
        choices.append(
            {
                "index": choice.get("index", position),
                "message": message,
                "finish_reason": finish_reason(choice.get("finish_reason")),
            }
        )
    shaped: dict[str, Any] = {
        "id": body.get("id") or "chatcmpl-watsonx",
        "created": int(body.get("created") or 0),
        "model": body.get("model_id") or body.get("model") or model_id,
        "choices": choices,
    }
    counted = usage(body.get("usage"))
    if counted is not None:
        shaped["usage"] = msgspec.to_builtins(counted)
    return msgspec.convert(shaped, ChatCompletion)


def chat_chunk_choices(body: dict[str, Any]) -> list[ChunkChoice]:
    """The choices of one chat_stream event; deltas keep only the OpenAI delta fields."""
    out = []
    for position, choice in enumerate(body.get("choices") or []):
        delta = {
            key: value
            for key, value in (choice.get("delta") or {}).items()
            if key in ("role", "content", "tool_calls", "refusal") and value is not None
        }
        if "role" in delta:
            delta["role"] = "assistant"
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            delta["tool_calls"] = [
                {k: v for k, v in {**call, "index": call.get("index", i)}.items() if v is not None}
                for i, call in enumerate(calls)
            ]
        out.append(
            ChunkChoice(
                index=choice.get("index", position),
                delta=msgspec.convert(delta, Delta),
                finish_reason=finish_reason(choice.get("finish_reason")),  # type: ignore[arg-type]
            )
        )
    return out


def chat_chunk(
    chunk_id: str, created: int, model: str, choices: list[ChunkChoice], include_usage: bool
) -> ChatChunk:
    return ChatChunk(
        id=chunk_id,
        created=created,
        model=model,
        choices=choices,
        usage=None if include_usage else msgspec.UNSET,
    )


# --------------------------------------------------------------------------------------------------
# Completions (text generation)


def generation_payload(
    request: CompletionRequest, model_id: str, scope: Scope, provider: str
) -> dict[str, Any]:
    prompt = request.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise _refuse(
                f"Provider '{provider}' (watsonx.ai) takes one text prompt per completion request.",
                "prompt",
            )
        prompt = prompt[0]
    for name in ("suffix", "best_of", "logprobs"):
        if _set(getattr(request, name)):
            raise _refuse(f"Provider '{provider}' (watsonx.ai) does not support '{name}'.", name)
    if _set(request.n) and request.n != 1:
        raise _refuse(f"Provider '{provider}' (watsonx.ai) generates one completion per request.", "n")
    extras = _extras(request.extras, GENERATION_EXTRAS)
    parameters: dict[str, Any] = {k: v for k, v in extras.items() if k != "prompt_variables"}
    sampled = any(_set(getattr(request, k)) for k in ("temperature", "top_p", "top_k"))
    parameters.setdefault("decoding_method", "sample" if sampled else "greedy")
    for ours, theirs in (
        ("max_tokens", "max_new_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("seed", "random_seed"),
    ):
        value = getattr(request, ours)
        if _set(value):
            parameters[theirs] = value
    stops = _stops(request.stop)
    if stops:
        parameters["stop_sequences"] = stops
    if request.echo is True:
        parameters["return_options"] = {**parameters.get("return_options", {}), "input_text": True}
    body: dict[str, Any] = {"model_id": model_id, "input": prompt, "parameters": parameters}
    if "prompt_variables" in extras:
        body["prompt_variables"] = extras["prompt_variables"]
    body.update(scope)
    return body


def generation_text(result: dict[str, Any], echo: bool) -> str:
    text = str(result.get("generated_text") or "")
    prefix = result.get("input_text")
    if echo and isinstance(prefix, str):
        return prefix + text
    return text


def completion(
    body: dict[str, Any], model_id: str, created: int, completion_id: str, echo: bool = False
) -> Completion:
    results = body.get("results") or []
    prompt = sum(int(r.get("input_token_count") or 0) for r in results)
    generated = sum(int(r.get("generated_token_count") or 0) for r in results)
    choices = [
        CompletionChoice(
            index=i,
            text=generation_text(r, echo),
            finish_reason=finish_reason(r.get("stop_reason")) or "stop",  # type: ignore[arg-type]
        )
        for i, r in enumerate(results)
    ]
    return Completion(
        id=completion_id,
        created=created,
        model=body.get("model_id") or model_id,
        choices=choices,
        usage=Usage(prompt_tokens=prompt, completion_tokens=generated, total_tokens=prompt + generated),
    )


# --------------------------------------------------------------------------------------------------
# Embeddings


def embedding_payload(
    request: EmbeddingRequest, model_id: str, scope: Scope, provider: str
) -> dict[str, Any]:
    inputs = [request.input] if isinstance(request.input, str) else request.input
    if not all(isinstance(item, str) for item in inputs):
        raise _refuse(f"Provider '{provider}' (watsonx.ai) embeds text, not token ids.", "input")
    if _set(request.dimensions):
        raise _refuse(
            f"Provider '{provider}' (watsonx.ai) does not support 'dimensions' for embeddings.",
            "dimensions",
        )
    body: dict[str, Any] = {"model_id": model_id, "inputs": inputs}
    parameters = _extras(request.extras, EMBEDDING_EXTRAS)
    if parameters:
        body["parameters"] = parameters
    body.update(scope)
    return body


def embedding_response(body: dict[str, Any], model_id: str, as_base64: bool) -> EmbeddingResponse:
    data = []
    for index, result in enumerate(body.get("results") or []):
        vector = [float(x) for x in result.get("embedding") or []]
        encoded: list[float] | str = vector
        if as_base64:
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append(Embedding(index=index, embedding=encoded))
    tokens = int(body.get("input_token_count") or 0)
    return EmbeddingResponse(
        model=body.get("model_id") or model_id,
        data=data,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
