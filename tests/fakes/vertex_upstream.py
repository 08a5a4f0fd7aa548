"""A fake of Google Vertex AI on loopback: the OAuth token endpoint and the data plane.

* ``POST /token``: the service-account jwt-bearer grant. The assertion's RS256 signature is checked
  with the test key pair's public key, and ``iss``, ``aud`` (Google's token endpoint, whatever the key's token_uri), ``scope`` and ``exp``
  are checked; the answer is ``{access_token, expires_in, token_type}`` or Google's OAuth error
  (``{"error": "invalid_grant", "error_description": …}``). ``token_status`` forces an error status.
* ``POST /v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{model}:{method}``
  with ``Authorization: Bearer <issued token>``:
  - google ``:generateContent`` / ``:streamGenerateContent?alt=sse`` (Gemini body and candidates),
  - anthropic ``:rawPredict`` / ``:streamRawPredict`` (Messages body with
    ``anthropic_version: vertex-2023-10-16`` and no ``model``; rendered by the Anthropic fake),
  - google ``:predict`` for text embeddings (``instances [{content}]`` → ``predictions``).

Native requests become OpenAI-shaped bodies for the shared brain (``plan_chat``). Scenarios by model
name as in ``Scenario`` (Claude: the same names after ``claude-``), errors in Google's shape
``{"error": {code, message, status}}`` (Anthropic's shape for Claude), 429 with ``retry-after: 7``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any, Final
from urllib.parse import parse_qs

import orjson
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes import anthropic_upstream as claude
from tests.fakes.openai_upstream import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    MIDSTREAM_DROP_AFTER,
    REQUEST_ID,
    REQUEST_JSON,
    RETRY_AFTER_S,
    SLOW_STREAM_DELAY_S,
    SLOW_STREAM_WORDS,
    ChatPlan,
    Handler,
    JSONDict,
    RecordedRequest,
    Scenario,
    count_words,
    embedding_vector,
    plan_chat,
    word_pieces,
)

SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
AUDIENCE: Final = "https://oauth2.googleapis.com/token"
GEMINI_FIELDS: Final = frozenset(
    {
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "generationConfig",
        "safetySettings",
        "cachedContent",
        "labels",
        "modelArmorConfig",
    }
)
GOOGLE_STATUS: Final = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: (
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
        "other valid authentication credential.",
    ),
    403: ("PERMISSION_DENIED", "Permission 'aiplatform.endpoints.predict' denied on resource."),
    404: ("NOT_FOUND", "Publisher Model `{model}` was not found or your project does not have access to it."),
    409: ("ABORTED", "The operation was aborted."),
    429: ("RESOURCE_EXHAUSTED", "Resource exhausted. Please try again later."),
    500: ("INTERNAL", "Internal error encountered."),
    503: ("UNAVAILABLE", "The service is currently unavailable."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
FINISH: Final = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}


def google_error(
    status: int,
    message: str | None = None,
    headers: dict[str, str] | None = None,
    details: list[JSONDict] | None = None,
) -> web.Response:
    name, default = GOOGLE_STATUS.get(status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", ""))
    error: JSONDict = {
        "code": status,
        "message": message or default or f"Simulated error {status}.",
        "status": name,
    }
    if details:
        error["details"] = details
    return web.Response(
        status=status, body=orjson.dumps({"error": error}), content_type="application/json", headers=headers
    )


def scenario_error(status: int, model: str) -> web.Response:
    message = GOOGLE_STATUS.get(status, ("", ""))[1].format(model=model) or None
    if status != 429:
        return google_error(status, message)
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{RETRY_AFTER_S}s"}
    return google_error(status, message, {"retry-after": RETRY_AFTER_S}, [retry])


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


class Invalid(Exception):
    pass


# --------------------------------------------------------------------------------------------------
# Gemini request → OpenAI-shaped body for the brain


def _field(obj: Any, camel: str) -> Any:
    """A field by its lowerCamel or snake_case name (Google's JSON parser accepts both)."""
    if not isinstance(obj, dict):
        return None
    if camel in obj:
        return obj[camel]
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return obj.get(snake)


def _texts(parts: list[JSONDict]) -> str:
    return " ".join(p["text"] for p in parts if isinstance(p.get("text"), str))


def _tool_result_text(response: Any) -> str:
    if isinstance(response, dict):
        strings = [v for v in response.values() if isinstance(v, str)]
        if strings:
            return " ".join(strings)
    return orjson.dumps(response).decode()


def gemini_to_openai(native: JSONDict, model: str) -> JSONDict:
    unknown = sorted(k for k in native if _camel(k) not in GEMINI_FIELDS)
    if unknown:
        raise Invalid(f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
    contents = _field(native, "contents")
    if not isinstance(contents, list) or not contents:
        raise Invalid("Unable to submit request because it must include at least one parts field.")
    messages: list[JSONDict] = []
    system = _field(native, "systemInstruction")
    if system:
        messages.append({"role": "system", "content": _texts(_field(system, "parts") or [])})
    for content in contents:
        role = _field(content, "role") or "user"
        parts = _field(content, "parts")
        if role not in ("user", "model") or not isinstance(parts, list) or not parts:
            raise Invalid("Please use a valid role: user, model.")
        if role == "model":
            calls = [_field(p, "functionCall") for p in parts if _field(p, "functionCall")]
            turn: JSONDict = {"role": "assistant", "content": _texts(parts) or None}
            if calls:
                turn["tool_calls"] = [
                    {
                        "id": f"call_{i}",
                        "type": "function",
                        "function": {
                            "name": c.get("name"),
                            "arguments": orjson.dumps(c.get("args") or {}).decode(),
                        },
                    }
                    for i, c in enumerate(calls)
                ]
            messages.append(turn)
            continue
        user_parts: list[JSONDict] = []
        for part in parts:
            if (result := _field(part, "functionResponse")) is not None:
                text = _tool_result_text(_field(result, "response"))
                messages.append({"role": "tool", "tool_call_id": result.get("name"), "content": text})
            elif _field(part, "inlineData") or _field(part, "fileData"):
                data = _field(part, "inlineData") or _field(part, "fileData")
                if not _field(data, "mimeType") or not (_field(data, "data") or _field(data, "fileUri")):
                    raise Invalid("Unable to process input image: mimeType and data are required.")
                user_parts.append({"type": "image_url", "image_url": {"url": "fake://image"}})
            elif isinstance(part.get("text"), str):
                user_parts.append({"type": "text", "text": part["text"]})
        if user_parts:
            messages.append({"role": "user", "content": user_parts})
    body: JSONDict = {"model": model, "messages": messages}
    _generation(body, _field(native, "generationConfig") or {})
    _tools(body, native)
    return body


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def _generation(body: JSONDict, config: JSONDict) -> None:
    if isinstance(_field(config, "maxOutputTokens"), int):
        body["max_tokens"] = _field(config, "maxOutputTokens")
    if _field(config, "stopSequences"):
        body["stop"] = _field(config, "stopSequences")
    if isinstance(_field(config, "candidateCount"), int):
        body["n"] = _field(config, "candidateCount")
    if _field(config, "responseMimeType") == "application/json":
        schema = _field(config, "responseSchema") or _field(config, "responseJsonSchema")
        body["response_format"] = (
            {"type": "json_schema", "json_schema": {"schema": schema}} if schema else {"type": "json_object"}
        )


def _tools(body: JSONDict, native: JSONDict) -> None:
    declarations = [d for t in _field(native, "tools") or [] for d in _field(t, "functionDeclarations") or []]
    if declarations:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": d.get("name"),
                    "description": d.get("description", ""),
                    "parameters": d.get("parameters") or _field(d, "parametersJsonSchema") or {},
                },
            }
            for d in declarations
        ]
    config = _field(_field(native, "toolConfig") or {}, "functionCallingConfig") or {}
    mode = config.get("mode")
    allowed = _field(config, "allowedFunctionNames") or []
    if mode == "NONE":
        body["tool_choice"] = "none"
    elif mode == "ANY" and len(allowed) == 1:
        body["tool_choice"] = {"type": "function", "function": {"name": allowed[0]}}
    elif mode == "ANY":
        body["tool_choice"] = "required"


# --------------------------------------------------------------------------------------------------
# Plan → Gemini response


class GeminiRendered:
    def __init__(self, plan: ChatPlan, body: JSONDict) -> None:
        self.plan = plan
        self.finish = FINISH[plan.finish_reason]
        self.text = plan.reply_text
        self.response_id = uuid.uuid4().hex[:22]

    def usage(self) -> JSONDict:
        prompt, completion = self.plan.prompt_tokens, self.plan.completion_tokens()
        return {
            "promptTokenCount": prompt,
            "candidatesTokenCount": completion,
            "totalTokenCount": prompt + completion,
            "trafficType": "ON_DEMAND",
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": completion}],
        }

    def _envelope(self, candidates: list[JSONDict], usage: bool) -> JSONDict:
        out: JSONDict = {"candidates": candidates, "modelVersion": self.plan.model}
        out["createTime"] = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        out["responseId"] = self.response_id
        if usage:
            out["usageMetadata"] = self.usage()
        return out

    def _call_parts(self, index: int) -> list[JSONDict]:
        return [
            {"functionCall": {"name": c.name, "args": orjson.loads(c.arguments)}}
            for c in self.plan.tool_calls[index]
        ]

    def response(self) -> JSONDict:
        candidates = []
        for index in range(self.plan.n):
            parts = self._call_parts(index) if self.plan.tool_calls else [{"text": self.text or ""}]
            content = {"role": "model", "parts": parts}
            candidates.append(
                {"index": index, "content": content, "finishReason": self.finish, "avgLogprobs": -0.1}
            )
        return self._envelope(candidates, usage=True)

    def events(self) -> Iterator[bytes]:
        if self.plan.tool_calls:
            content = {"role": "model", "parts": self._call_parts(0)}
            yield _sse(self._envelope([{"content": content, "finishReason": self.finish}], usage=True))
            return
        pieces = word_pieces(self.text or "") or [""]
        for number, piece in enumerate(pieces, 1):
            candidate: JSONDict = {"content": {"role": "model", "parts": [{"text": piece}]}}
            last = number == len(pieces)
            if last:
                candidate["finishReason"] = self.finish
            yield _sse(self._envelope([candidate], usage=last))


def _sse(payload: JSONDict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


# --------------------------------------------------------------------------------------------------
# The server


class FakeVertex(claude.FakeAnthropic):
    """Vertex AI's token endpoint and data plane; lifecycle and recording as in ``FakeOpenAI``."""

    def __init__(
        self,
        public_key: rsa.RSAPublicKey,
        *,
        client_email: str = "gateway@modelyard-test.iam.gserviceaccount.com",
        key_id: str = "fake-key-id-0001",
        project: str = "modelyard-test",
        region: str = "us-central1",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__("unused", host, port)
        self.public_key = public_key
        self.client_email = client_email
        self.key_id = key_id
        self.project = project
        self.region = region
        self.token_lifetime = 3599
        self.token_status: int | None = None
        """Forces the token endpoint to answer this error status."""
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        self.token_requests = 0

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def revoke_tokens(self) -> None:
        self.revoked.update(self.issued)

    async def start_async(self, backlog: int = 128) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._vertex_middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/token", self._token)
        path = "/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{model}"
        app.router.add_post(path, self._model)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=backlog)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}"

    @web.middleware
    async def _vertex_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = "req_" + uuid.uuid4().hex
        body = await request.read()
        parsed: Any = None
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(body) if body else None
        request[REQUEST_JSON] = parsed
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(
            RecordedRequest(request.method, request.path, request.query_string, headers, body, parsed)
        )
        if request.path != "/token":
            token = headers.get("authorization", "").removeprefix("Bearer ")
            if token not in self.issued or token in self.revoked:
                return google_error(401)
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return google_error(404, "The requested URL was not found on this server.")

    # ---- OAuth ------------------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        if self.token_status is not None:
            return _oauth_error(self.token_status, "backend_error", "Simulated token endpoint failure.")
        form = parse_qs((await request.read()).decode())
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return _oauth_error(400, "unsupported_grant_type", "Invalid grant_type.")
        problem = self._check_assertion((form.get("assertion") or [""])[0])
        if problem:
            return _oauth_error(400, "invalid_grant", problem)
        token = "ya29.fake-" + uuid.uuid4().hex
        self.issued.append(token)
        answer = {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    def _check_assertion(self, assertion: str) -> str | None:
        try:
            header_b64, claims_b64, signature_b64 = assertion.split(".")
            header, claims = orjson.loads(_b64decode(header_b64)), orjson.loads(_b64decode(claims_b64))
            self.public_key.verify(
                _b64decode(signature_b64),
                f"{header_b64}.{claims_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, InvalidSignature, orjson.JSONDecodeError):
            return "Invalid JWT Signature."
        now = time.time()
        if header.get("alg") != "RS256" or header.get("kid") != self.key_id:
            return "Invalid JWT: unexpected header."
        if claims.get("iss") != self.client_email:
            return "Invalid JWT: iss does not match the service account."
        if claims.get("aud") != AUDIENCE:
            return "Invalid JWT: aud must be https://oauth2.googleapis.com/token."
        if SCOPE not in str(claims.get("scope", "")).split():
            return "Invalid JWT: scope must include cloud-platform."
        if (
            not (claims.get("iat", 0) - 60 <= now < claims.get("exp", 0))
            or claims["exp"] - claims["iat"] > 3600
        ):
            return (
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
            )
        return None

    # ---- data plane -------------------------------------------------------------------------------

    async def _model(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        model, _, method = info["model"].rpartition(":")
        if info["project"] != self.project or info["region"] != self.region:
            return google_error(403, f"Permission denied on resource project {info['project']}.")
        native = request[REQUEST_JSON]
        if not isinstance(native, dict):
            return google_error(400, "Invalid JSON payload received.")
        publisher = info["publisher"]
        if publisher == "anthropic" and method in ("rawPredict", "streamRawPredict"):
            return await self._claude(request, model, native, method == "streamRawPredict")
        if publisher == "google" and method in ("generateContent", "streamGenerateContent"):
            streaming = method == "streamGenerateContent"
            if streaming and request.query.get("alt") != "sse":
                return google_error(400, "This fake only streams with alt=sse.")
            return await self._gemini(request, model, native, streaming)
        if publisher == "google" and method == "predict":
            return self._predict(model, native)
        return google_error(404, f"Method {method} of publisher {publisher} is not found.")

    async def _gemini(
        self, request: web.Request, model: str, native: JSONDict, streaming: bool
    ) -> web.StreamResponse:
        scenario = Scenario.for_model(model)
        if scenario.error_status is not None:
            return scenario_error(scenario.error_status, model)
        if scenario.garbage:
            if streaming:
                garbage = b"data: <html>upstream garbage, not JSON\r\n\r\n"
                return web.Response(body=garbage, headers={"Content-Type": "text/event-stream"})
            return web.Response(body=b"<html>upstream garbage, not JSON", content_type="application/json")
        if scenario.midstream_drop and not streaming:
            return await self._drop_mid_body(request, {"model": model})
        try:
            body = gemini_to_openai(native, model)
        except Invalid as exc:
            return google_error(400, str(exc))
        rendered = GeminiRendered(
            plan_chat(body, model, SLOW_STREAM_WORDS if scenario.slow_stream else None), body
        )
        if not streaming:
            return web.Response(body=orjson.dumps(rendered.response()), content_type="application/json")
        return await self._native_stream(
            request,
            model,
            rendered.events(),
            delay=SLOW_STREAM_DELAY_S if scenario.slow_stream else 0.0,
            drop_after=MIDSTREAM_DROP_AFTER if scenario.midstream_drop else None,
        )

    async def _claude(
        self, request: web.Request, model: str, native: JSONDict, streaming: bool
    ) -> web.StreamResponse:
        version = native.get("anthropic_version")
        if not isinstance(version, str) or not version:
            return claude.invalid("anthropic_version: Field required")
        if "model" in native:
            return claude.invalid("model: Extra inputs are not permitted")
        if bool(native.get("stream")) != streaming:
            return claude.invalid("stream: must match the method (rawPredict or streamRawPredict)")
        scenario = Scenario.for_model(model.removeprefix("claude-"))
        if scenario.error_status is not None:
            return claude.scenario_error(scenario.error_status, model)
        if scenario.garbage:
            return web.Response(body=b"<html>upstream garbage, not JSON", content_type="application/json")
        for i, message in enumerate(native.get("messages") or []):
            blocks = message.get("content") if isinstance(message, dict) else None
            for j, block in enumerate(blocks if isinstance(blocks, list) else []):
                if isinstance(block, dict) and (block.get("source") or {}).get("type") == "url":
                    return claude.invalid(
                        f"messages.{i}.content.{j}.image.source.base64.data: URL sources are not supported"
                    )
        native = {k: v for k, v in native.items() if k != "anthropic_version"} | {"model": model}
        try:
            body, prefill = claude.openai_body(native)
        except claude.Invalid as exc:
            return claude.invalid(str(exc))
        words = SLOW_STREAM_WORDS if scenario.slow_stream else None
        rendered = claude.Rendered(plan_chat(body, model, words), body, prefill)
        if not streaming:
            return web.Response(body=orjson.dumps(rendered.message()), content_type="application/json")
        return await self._native_stream(
            request,
            model,
            rendered.events(),
            delay=SLOW_STREAM_DELAY_S if scenario.slow_stream else 0.0,
            drop_after=claude.MIDSTREAM_DROP_AFTER if scenario.midstream_drop else None,
        )

    def _predict(self, model: str, native: JSONDict) -> web.Response:
        scenario = Scenario.for_model(model)
        if scenario.error_status is not None:
            return scenario_error(scenario.error_status, model)
        instances = native.get("instances")
        if not isinstance(instances, list) or not instances:
            return google_error(400, "instances: at least one instance is required.")
        parameters = native.get("parameters") or {}
        dimensions = parameters.get("outputDimensionality") or DEFAULT_EMBEDDING_DIMENSIONS
        predictions = []
        for instance in instances:
            content = instance.get("content") if isinstance(instance, dict) else None
            if not isinstance(content, str) or not content:
                return google_error(400, "instances[].content: a non-empty string is required.")
            statistics = {"token_count": count_words(content), "truncated": False}
            values = embedding_vector(content.encode(), dimensions)
            predictions.append({"embeddings": {"values": values, "statistics": statistics}})
        body = {
            "predictions": predictions,
            "metadata": {"billableCharacterCount": sum(len(i["content"]) for i in instances)},
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    body = {"error": error, "error_description": description}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


# --------------------------------------------------------------------------------------------------
# Test keys


def generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def service_account_info(fake: FakeVertex, private_key: rsa.RSAPrivateKey) -> JSONDict:
    """A service-account key file's JSON whose token_uri is the fake's token endpoint."""
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": fake.project,
        "private_key_id": fake.key_id,
        "private_key": pem,
        "client_email": fake.client_email,
        "client_id": "100000000000000000001",
        "token_uri": fake.token_uri,
    }
