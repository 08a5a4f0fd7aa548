"""Pure conversions for Bedrock's InvokeModel: Titan and Cohere embedding bodies, and each model
family's native legacy text-completion body and result. No I/O here."""

import base64
import struct
import time
import uuid
from typing import Any

import msgspec

from modelyard.providers.bedrock_convert import unsupported_parameter
from modelyard.schema.chat import (
    FinishReason,
)
from modelyard.schema.common import Usage
from modelyard.schema.completions import Completion, CompletionChoice, CompletionRequest
from modelyard.schema.embeddings import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage

# --------------------------------------------------------------------------------------------------
# Embeddings (InvokeModel)


def embedding_family(model_id: str) -> str | None:
    """`titan` or `cohere`; the model id may carry a region prefix (`us.cohere.embed-…`) or be an ARN."""
    name = model_id.rsplit("/", 1)[-1]
    if "amazon.titan-embed" in name:
        return "titan"
    if "cohere.embed" in name:
        return "cohere"
    return None


def embedding_texts(request: EmbeddingRequest, provider: str) -> list[str]:
    value = request.input
    texts = [value] if isinstance(value, str) else value
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise unsupported_parameter(
            f"Provider '{provider}' (type bedrock) embeds non-empty strings only (no token ids).", "input"
        )
    return list(texts)


def _plain(value: Any) -> Any:
    return msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value


def titan_body(request: EmbeddingRequest, model_id: str, text: str) -> dict[str, Any]:
    body: dict[str, Any] = {"inputText": text}
    if "-v1" not in model_id:  # Titan Text Embeddings v1 takes inputText only
        if isinstance(request.dimensions, int):
            body["dimensions"] = request.dimensions
        if "normalize" in request.extras:
            body["normalize"] = bool(_plain(request.extras["normalize"]))
    return body


def cohere_body(request: EmbeddingRequest, texts: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"texts": texts, "input_type": "search_document"}
    for name in ("input_type", "truncate"):
        if name in request.extras:
            body[name] = _plain(request.extras[name])
    return body


class TitanEmbedding(msgspec.Struct):
    embedding: list[float]
    inputTextTokenCount: int = 0


class CohereEmbeddings(msgspec.Struct):
    embeddings: Any


def _vector(values: list[float], encoding: Any) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
    return values


def to_embeddings(model_id: str, vectors: list[list[float]], tokens: int, encoding: Any) -> EmbeddingResponse:
    return EmbeddingResponse(
        model=model_id,
        data=[Embedding(index=i, embedding=_vector(v, encoding)) for i, v in enumerate(vectors)],
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


def cohere_vectors(result: CohereEmbeddings) -> list[list[float]]:
    """`embeddings` is a list of vectors, or `{"float": [...]}` when embedding_types was given."""
    embeddings = result.embeddings
    if isinstance(embeddings, dict):
        embeddings = embeddings.get("float") or []
    return [list(map(float, v)) for v in embeddings]


# --------------------------------------------------------------------------------------------------
# Legacy completions (InvokeModel with each family's native text-completion body)

COMPLETION_FAMILIES: tuple[str, ...] = (
    "anthropic.claude-v",
    "anthropic.claude-instant",
    "amazon.titan-text",
    "cohere.command",
    "ai21.j2",
    "meta.llama",
    "mistral.",
)
DEFAULT_MAX_TOKENS = 256
"""Sent when the client gives no max_tokens to the families that require one (Anthropic text)."""
TEXT_FINISH: dict[str, FinishReason] = {
    "length": "length",
    "max_tokens": "length",
    "LENGTH": "length",
    "MAX_TOKENS": "length",
    "CONTENT_FILTERED": "content_filter",
    "ERROR_TOXIC": "content_filter",
}


def text_family(model_id: str) -> str | None:
    """The native text-completion family of a model id, or None (then Converse is used)."""
    name = model_id.rsplit("/", 1)[-1]
    if name.startswith("cohere.command-r"):
        return None  # Command R takes a chat-shaped body: Converse handles it
    return next((family for family in COMPLETION_FAMILIES if family in name), None)


def completion_prompts(request: CompletionRequest, provider: str) -> list[str]:
    prompt = request.prompt
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise unsupported_parameter(
            f"Provider '{provider}' (type bedrock) completes text prompts only (no token ids).", "prompt"
        )
    if isinstance(request.n, int) and request.n > 1:
        raise unsupported_parameter(f"Provider '{provider}' (type bedrock) does not support n > 1.", "n")
    return list(prompts)


def text_body(family: str, request: CompletionRequest, prompt: str) -> dict[str, Any]:
    """The InvokeModel body of one prompt for a text-completion family."""
    limit = request.max_tokens if isinstance(request.max_tokens, int) else None
    stop = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
    temperature, top_p, top_k = (
        v if isinstance(v, int | float) else None for v in (request.temperature, request.top_p, request.top_k)
    )
    if family.startswith("anthropic"):
        if not prompt.lstrip().startswith("Human:") and "\n\nHuman:" not in prompt:
            prompt = f"\n\nHuman: {prompt}\n\nAssistant:"
        fields = {"prompt": prompt, "max_tokens_to_sample": limit or DEFAULT_MAX_TOKENS}
        fields |= {"temperature": temperature, "top_p": top_p, "top_k": top_k, "stop_sequences": stop or None}
    elif family == "amazon.titan-text":
        config = {
            "maxTokenCount": limit,
            "temperature": temperature,
            "topP": top_p,
            "stopSequences": stop or None,
        }
        fields = {
            "inputText": prompt,
            "textGenerationConfig": {k: v for k, v in config.items() if v is not None},
        }
    elif family == "cohere.command":
        fields = {"prompt": prompt, "max_tokens": limit, "temperature": temperature, "p": top_p, "k": top_k}
        fields["stop_sequences"] = stop or None
    elif family == "ai21.j2":
        fields = {"prompt": prompt, "maxTokens": limit, "temperature": temperature, "topP": top_p}
        fields["stopSequences"] = stop or None
    elif family == "meta.llama":
        fields = {"prompt": prompt, "max_gen_len": limit, "temperature": temperature, "top_p": top_p}
    else:  # mistral
        fields = {"prompt": prompt, "max_tokens": limit, "temperature": temperature, "top_p": top_p}
        fields |= {"top_k": top_k, "stop": stop or None}
    return {k: v for k, v in fields.items() if v is not None and v != {}}


def text_result(data: Any) -> tuple[str, str | None]:
    """(text, native stop reason) of a response body or stream chunk of any text family."""
    if not isinstance(data, dict):
        return "", None
    for key in ("outputs", "generations", "results", "completions"):
        items = data.get(key)
        if isinstance(items, list) and items and isinstance(items[0], dict):
            data = {**items[0], **(items[0].get("data") or {})}
            reason = data.get("finishReason")
            if isinstance(reason, dict):
                data["finishReason"] = reason.get("reason")
            break
    text = next(
        (data[k] for k in ("completion", "outputText", "generation", "text") if isinstance(data.get(k), str)),
        "",
    )
    stop = next(
        (
            data[k]
            for k in ("stop_reason", "completionReason", "finish_reason", "finishReason")
            if data.get(k)
        ),
        None,
    )
    return text, stop


def text_finish(native: str | None) -> FinishReason:
    return TEXT_FINISH.get(native or "", "stop")


def to_text_completion(
    model_id: str,
    request_id: str | None,
    results: list[tuple[str, str | None]],
    prompt_tokens: int,
    output_tokens: int,
) -> Completion:
    return Completion(
        id="cmpl-" + (request_id or uuid.uuid4().hex),
        created=int(time.time()),
        model=model_id,
        choices=[
            CompletionChoice(index=i, text=text, finish_reason=text_finish(stop))
            for i, (text, stop) in enumerate(results)
        ],
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=output_tokens,
            total_tokens=prompt_tokens + output_tokens,
        ),
    )
