"""Pure conversions for Vertex AI text embeddings (`:predict` on a publisher model).

Request: `{"instances": [{"content": text, "task_type"?, "title"?}], "parameters":
{"outputDimensionality"?, "autoTruncate"?}}`; response: `{"predictions": [{"embeddings": {"values",
"statistics": {"token_count", "truncated"}}}]}`. Text inputs only: token-id inputs answer a 400.
Extras passed through: `task_type` and `title` (per instance), `autoTruncate` / `auto_truncate`.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import msgspec

from modelyard.errors import ClientError, UpstreamError
from modelyard.schema.embeddings import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage


class Statistics(msgspec.Struct):
    token_count: float = 0
    truncated: bool = False


class Values(msgspec.Struct):
    values: list[float]
    statistics: Statistics = msgspec.field(default_factory=Statistics)


class Prediction(msgspec.Struct):
    embeddings: Values


class PredictResponse(msgspec.Struct):
    predictions: list[Prediction]


def _plain(value: Any) -> Any:
    """An extras value as a plain Python value (REST extras are still-encoded JSON)."""
    return msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value


def _texts(provider: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ClientError(
        f"Provider '{provider}' (type google-cloud-vertex-ai) embeds text only: "
        "send a string or a list of strings.",
        status=400,
        param="input",
        code="unsupported_parameter",
    )


def build_predict(provider: str, request: EmbeddingRequest) -> dict[str, Any]:
    extras = {key: _plain(value) for key, value in request.extras.items()}
    instance_extras = {key: extras[key] for key in ("task_type", "title") if key in extras}
    instances = [{"content": text, **instance_extras} for text in _texts(provider, request.input)]
    parameters: dict[str, Any] = {}
    if isinstance(request.dimensions, int):
        parameters["outputDimensionality"] = request.dimensions
    truncate = extras.get("autoTruncate", extras.get("auto_truncate"))
    if isinstance(truncate, bool):
        parameters["autoTruncate"] = truncate
    body: dict[str, Any] = {"instances": instances}
    if parameters:
        body["parameters"] = parameters
    return body


def embedding_response(provider: str, data: bytes, model_id: str, as_base64: bool) -> EmbeddingResponse:
    try:
        predictions = msgspec.json.decode(data, type=PredictResponse).predictions
    except msgspec.MsgspecError:
        raise UpstreamError(
            f"Provider '{provider}' sent a response that is not valid embeddings JSON.",
            status=502,
            code="bad_upstream_response",
            provider=provider,
        ) from None
    items = []
    tokens = 0
    for index, prediction in enumerate(predictions):
        vector = prediction.embeddings.values
        tokens += int(prediction.embeddings.statistics.token_count)
        encoded: list[float] | str = (
            base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
        )
        items.append(Embedding(index=index, embedding=encoded))
    return EmbeddingResponse(
        model=model_id, data=items, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    )
