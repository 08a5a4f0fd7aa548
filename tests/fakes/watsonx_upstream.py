"""A fake of IBM watsonx.ai's REST API and of IBM Cloud IAM's token endpoint, on loopback.

Wire format as the `ibm-watsonx-ai` SDK and IAM speak it:

* ``POST /identity/token`` (form ``grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey=…``) →
  ``{access_token (a JWT with exp/iat), refresh_token, token_type, expires_in, expiration, scope}``;
  an unknown key → 400 ``{errorCode: BXNIM0415E, errorMessage, context}``.
* ``POST /ml/v1/text/{chat,chat_stream,generation,generation_stream,embeddings}?version=…`` with
  ``Authorization: Bearer <token>`` (an unknown or expired token → 401) and exactly the configured
  ``project_id`` or ``space_id`` in the body. Streams are SSE (``id:``, ``event: message``,
  ``data: {…}``) with no ``[DONE]``; errors are ``{"errors": [{code, message, more_info}], trace,
  status_code}``.

Answers come from the OpenAI fake's provider-neutral brain (`plan_chat`, `plan_completion`), and
the scenarios follow `Scenario.for_model` (plus ``midstream-error``: an ``event: error`` after a few
chunks).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Final

import orjson
from aiohttp import web

from tests.fakes.openai_upstream import (
    MIDSTREAM_DROP_AFTER,
    REQUEST_ID,
    REQUEST_JSON,
    SLOW_STREAM_DELAY_S,
    SLOW_STREAM_WORDS,
    FakeOpenAI,
    Handler,
    JSONDict,
    Prompt,
    RecordedRequest,
    Scenario,
    chat_stream_choices,
    count_words,
    embedding_vector,
    new_id,
    plan_chat,
    plan_completion,
)

GRANT_TYPE: Final = "urn:ibm:params:oauth:grant-type:apikey"
DEFAULT_MAX_NEW_TOKENS: Final = 20
EMBEDDING_DIMENSIONS: Final = 8
MORE_INFO: Final = "https://cloud.ibm.com/apidocs/watsonx-ai"
_ERROR_CODES: Final = {
    400: ("json_validation_error", "Json document validation error (simulated)."),
    401: ("authentication_token_expired", "Failed to authenticate the request due to an expired token"),
    403: ("authorization_rejected", "The user is not authorized to perform this action"),
    404: ("model_not_supported", "Model '{model}' is not supported"),
    429: ("token_quota_reached", "Too many requests, retry later"),
    500: ("internal_error", "Internal server error (simulated)"),
    503: ("service_unavailable", "The service is temporarily unavailable"),
}
_ROLES: Final = frozenset({"system", "user", "assistant", "tool", "control"})


def error_body(status: int, code: str, message: str) -> JSONDict:
    return {
        "errors": [{"code": code, "message": message, "more_info": MORE_INFO}],
        "trace": uuid.uuid4().hex,
        "status_code": status,
    }


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(error_body(status, code, message)),
        content_type="application/json",
        headers=headers,
    )


def scenario_error(status: int, model: str) -> web.Response:
    code, message = _ERROR_CODES.get(status, ("simulated_error", f"Simulated upstream error {status}."))
    headers = {"retry-after": "7"} if status == 429 else None
    return error_response(status, code, message.format(model=model), headers)


def jwt(claims: JSONDict) -> str:
    """An unsigned-in-spirit JWT (HS256 header, random signature) that SDKs can decode."""

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    header = part(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": "fake"}))
    return f"{header}.{part(orjson.dumps(claims))}.{part(uuid.uuid4().bytes)}"


def sse_event(seq: int, payload: JSONDict | bytes, event: str = "message") -> bytes:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return f"id: {seq}\nevent: {event}\n".encode() + b"data: " + data + b"\n\n"


def openai_chat_body(body: JSONDict) -> JSONDict:
    """A watsonx chat body as the OpenAI-shaped body the brain reads."""
    shaped = {k: v for k, v in body.items() if k not in ("model_id", "project_id", "space_id")}
    shaped["model"] = body["model_id"]
    if "tool_choice_option" in body:
        shaped["tool_choice"] = shaped.pop("tool_choice_option")
    return shaped


def chat_envelope(plan: Any) -> JSONDict:
    return {
        "id": plan.id,
        "model_id": plan.model,
        "model": plan.model,
        "model_version": "1.0.0",
        "created": plan.created,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(plan.created)),
    }


def chat_body(plan: Any) -> JSONDict:
    choices = []
    for index in range(plan.n):
        message: JSONDict = {"role": "assistant"}
        if plan.tool_calls:
            message["tool_calls"] = [call.as_message_field() for call in plan.tool_calls[index]]
        else:
            message["content"] = plan.reply_text
        choices.append({"index": index, "message": message, "finish_reason": plan.finish_reason})
    usage = plan.usage()
    return {
        **chat_envelope(plan),
        "object": "chat.completion",
        "choices": choices,
        "usage": {k: usage[k] for k in ("completion_tokens", "prompt_tokens", "total_tokens")},
    }


def chat_stream_events(plan: Any) -> Iterator[JSONDict]:
    """watsonx chunks: OpenAI-like deltas; the usage rides on the chunk that finishes."""
    envelope = {**chat_envelope(plan), "object": "chat.completion.chunk"}
    usage = plan.usage()
    for choice in chat_stream_choices(plan):
        choice = {k: v for k, v in choice.items() if k != "logprobs"}
        chunk: JSONDict = {**envelope, "choices": [choice]}
        if choice.get("finish_reason"):
            chunk["usage"] = {k: usage[k] for k in ("completion_tokens", "prompt_tokens", "total_tokens")}
        yield chunk


class FakeWatsonx(FakeOpenAI):
    """``start()`` serves it from a background thread; ``base_url`` is the service root."""

    def __init__(
        self,
        apikey: str = "fake-ibm-cloud-apikey",
        *,
        project_id: str | None = "fake-project",
        space_id: str | None = None,
        token_ttl: float = 3600.0,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(api_key=apikey, host=host)
        self.project_id = project_id
        self.space_id = space_id
        self.token_ttl = token_ttl
        self.iam_delay = 0.0
        self.token_requests: list[RecordedRequest] = []
        self._tokens: dict[str, float] = {}  # token → expiry (unix time)

    @property
    def iam_url(self) -> str:
        return f"{self.base_url}/identity/token"

    def clear(self) -> None:
        super().clear()
        self.token_requests.clear()

    def revoke_tokens(self) -> None:
        self._tokens.clear()

    async def start_async(self, backlog: int = 128) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._wx_middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/identity/token", self._token)
        for name in ("chat", "chat_stream"):
            app.router.add_post(f"/ml/v1/text/{name}", self._chat)
        for name in ("generation", "generation_stream"):
            app.router.add_post(f"/ml/v1/text/{name}", self._generation)
        app.router.add_post("/ml/v1/text/embeddings", self._wx_embeddings)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=backlog)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}"

    # ---- plumbing -------------------------------------------------------------------------------

    @web.middleware
    async def _wx_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = "req_" + uuid.uuid4().hex
        raw = await request.read()
        parsed: Any = None
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(raw) if raw and request.path.startswith("/ml/") else None
        request[REQUEST_JSON] = parsed
        headers = {name.lower(): value for name, value in request.headers.items()}
        record = RecordedRequest(request.method, request.path, request.query_string, headers, raw, parsed)
        if request.path == "/identity/token":
            self.token_requests.append(record)
            return await handler(request)
        self.requests.append(record)
        refusal = self._check(request, parsed)
        if refusal is not None:
            return refusal
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return error_response(404, "not_found", f"Not found: {request.method} {request.path}")

    def _check(self, request: web.Request, body: Any) -> web.Response | None:
        authorization = request.headers.get("Authorization", "")
        token = authorization.removeprefix("Bearer ")
        expiry = self._tokens.get(token) if authorization.startswith("Bearer ") else None
        if expiry is None:
            return error_response(401, "authentication_token_not_valid", "Failed to authenticate the request")
        if expiry <= time.time():
            return error_response(401, *_ERROR_CODES[401])
        if not request.query.get("version"):
            return error_response(400, "missing_version", "Missing query parameter: version")
        if not isinstance(body, dict):
            return error_response(400, "json_type_error", "Json document is not valid")
        scope = {k: body.get(k) for k in ("project_id", "space_id") if k in body}
        expected = {"project_id": self.project_id} if self.project_id else {"space_id": self.space_id}
        if scope != expected:
            return error_response(400, "invalid_scope", "Exactly one of project_id or space_id is required")
        if not isinstance(body.get("model_id"), str) or not body["model_id"]:
            return error_response(400, "json_validation_error", "Missing required field: model_id")
        return None

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if self.iam_delay:
            await asyncio.sleep(self.iam_delay)
        if form.get("grant_type") != GRANT_TYPE or form.get("apikey") != self.api_key:
            context = {"requestId": uuid.uuid4().hex, "requestType": "incoming.Identity_Token"}
            refusal = {
                "errorCode": "BXNIM0415E",
                "errorMessage": "Provided API key could not be found.",
                "context": context,
            }
            return web.Response(status=400, body=orjson.dumps(refusal), content_type="application/json")
        now = int(time.time())
        expires = now + self.token_ttl
        token = jwt({"iam_id": "IBMid-fake", "iat": now, "exp": int(expires), "jti": uuid.uuid4().hex})
        self._tokens[token] = expires
        payload = {
            "access_token": token,
            "refresh_token": "not_supported",
            "ims_user_id": 1,
            "token_type": "Bearer",
            "expires_in": self.token_ttl,
            "expiration": int(expires),
            "scope": "ibm openid",
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def _scenario(
        self, request: web.Request, body: JSONDict, streaming: bool
    ) -> Scenario | web.StreamResponse:
        model = body["model_id"]
        scenario = Scenario.for_model(model)
        if scenario.error_status is not None:
            return scenario_error(scenario.error_status, model)
        if scenario.garbage:
            if streaming:
                return web.Response(
                    body=sse_event(1, b"<html>upstream garbage, not JSON"),
                    headers={"Content-Type": "text/event-stream"},
                )
            return web.Response(body=b"<html>upstream garbage, not JSON", content_type="application/json")
        return scenario

    async def _sse(
        self, request: web.Request, model: str, events: Iterable[JSONDict], scenario: Scenario
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        delay = SLOW_STREAM_DELAY_S if scenario.slow_stream else 0.0
        try:
            for seq, event in enumerate(events, start=1):
                if (scenario.midstream_drop or model == "midstream-error") and seq > MIDSTREAM_DROP_AFTER:
                    if model == "midstream-error":
                        payload = error_body(500, "internal_error", "Generation failed mid-stream.")
                        await response.write(sse_event(seq, payload, "error"))
                        await response.write_eof()
                    else:
                        self._abort(request)
                    return response
                if delay and await self._pause(delay):
                    self._abort(request)
                    return response
                if self._client_gone(request):
                    raise ConnectionResetError("the client went away")
                await response.write(sse_event(seq, event))
            await response.write_eof()
        except ConnectionError:
            self._record_cancel(model, request[REQUEST_ID])
        except asyncio.CancelledError:
            if not self._is_stopping:
                self._record_cancel(model, request[REQUEST_ID])
            raise
        return response

    # ---- endpoints ------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body: JSONDict = request[REQUEST_JSON]  # type: ignore[index]
        streaming = request.path.endswith("_stream")
        outcome = await self._scenario(request, body, streaming)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error_response(400, "json_validation_error", "messages: must contain at least 1 item")
        for message in messages:
            role = message.get("role") if isinstance(message, dict) else None
            if role not in _ROLES:
                return error_response(400, "json_validation_error", f"messages: invalid role {role!r}")
            if role != "user" and not isinstance(message.get("content", ""), str):
                return error_response(
                    400, "json_validation_error", f"messages: {role} content must be a string"
                )
        if "tool_choice" in body and "tool_choice_option" in body:
            return error_response(400, "json_validation_error", "tool_choice and tool_choice_option both set")
        model = body["model_id"]
        plan = plan_chat(openai_chat_body(body), model, SLOW_STREAM_WORDS if outcome.slow_stream else None)
        if not streaming:
            return web.Response(body=orjson.dumps(chat_body(plan)), content_type="application/json")
        return await self._sse(request, model, chat_stream_events(plan), outcome)

    async def _generation(self, request: web.Request) -> web.StreamResponse:
        body: JSONDict = request[REQUEST_JSON]  # type: ignore[index]
        streaming = request.path.endswith("_stream")
        outcome = await self._scenario(request, body, streaming)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        text = body.get("input")
        if not isinstance(text, str):
            return error_response(400, "json_validation_error", "input: must be a string")
        parameters = body.get("parameters") or {}
        stops = parameters.get("stop_sequences") or []
        shaped = {"max_tokens": parameters.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS), "stop": stops}
        model = body["model_id"]
        words = SLOW_STREAM_WORDS if outcome.slow_stream else None
        plan = plan_completion(shaped, model, [Prompt(text, count_words(text))], words)
        generated, finish = plan.texts[0]
        stop_reason = "max_tokens" if finish == "length" else "eos_token"
        if finish == "stop" and any(s in "Echo: " + text for s in stops):
            stop_reason = "stop_sequence"
        base = {"model_id": model, "model_version": "1.0.0", "created_at": "2026-01-01T00:00:00.000Z"}
        echo = (parameters.get("return_options") or {}).get("input_text") is True
        if not streaming:
            result = {
                "generated_text": generated,
                "generated_token_count": plan.completion_tokens,
                "input_token_count": plan.prompt_tokens,
                "stop_reason": stop_reason,
            }
            if echo:
                result["input_text"] = text
            return web.Response(
                body=orjson.dumps({**base, "results": [result]}), content_type="application/json"
            )
        pieces = [p for p in generated.split(" ")] if generated else [""]
        events = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            result = {
                "generated_text": piece if i == 0 else " " + piece,
                "generated_token_count": i + 1 if generated else 0,
                "input_token_count": plan.prompt_tokens,
                "stop_reason": stop_reason if last else "not_finished",
            }
            if echo and i == 0:
                result["input_text"] = text
            events.append({**base, "results": [result]})
        return await self._sse(request, model, events, outcome)

    async def _wx_embeddings(self, request: web.Request) -> web.StreamResponse:
        body: JSONDict = request[REQUEST_JSON]  # type: ignore[index]
        outcome = await self._scenario(request, body, False)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
            return error_response(
                400, "json_validation_error", "inputs: must be a non-empty array of strings"
            )
        results = [{"embedding": embedding_vector(i.encode(), EMBEDDING_DIMENSIONS)} for i in inputs]
        payload = {
            "model_id": body["model_id"],
            "results": results,
            "created_at": "2026-01-01T00:00:00.000Z",
            "input_token_count": sum(count_words(i) for i in inputs),
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")


__all__ = ["FakeWatsonx", "new_id"]
