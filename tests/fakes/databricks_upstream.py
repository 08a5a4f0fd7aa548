"""A fake Databricks Model Serving workspace on loopback, speaking its REST wire format.

* ``POST /serving-endpoints/{endpoint}/invocations`` with ``Authorization: Bearer <token>``: the
  endpoint name is the model; an OpenAI-shaped body without ``model`` is a chat (``messages``), a
  completion (``prompt``) or an embedding (``input``) request. Answers are OpenAI-shaped
  (``chat.completion``, ``text_completion``, an embedding list); streams are OpenAI SSE chunks
  ending with ``data: [DONE]``, with the usage on the last chunk (Databricks has no
  ``stream_options``).
* ``POST /serving-endpoints/{chat/completions,completions,embeddings}``: the OpenAI-compatible
  routes Databricks documents for the OpenAI client (``base_url={host}/serving-endpoints``, the
  endpoint name as ``model``).
* Errors are Databricks' ``{"error_code": ..., "message": ...}`` with the HTTP status.
* Endpoints named ``reasoning-…`` answer as Databricks' reasoning models do: ``content`` is a list
  of blocks (a ``reasoning`` block with a summary, then ``text`` blocks), in answers and deltas.

Replies come from the OpenAI fake's provider-neutral brain (``plan_chat``, ``plan_completion``,
``Scenario.for_model``), so the conformance assertions hold unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, Final

import orjson
from aiohttp import web

from tests.fakes.openai_upstream import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    MIDSTREAM_DROP_AFTER,
    REQUEST_JSON,
    RETRY_AFTER_S,
    SLOW_STREAM_DELAY_S,
    SLOW_STREAM_WORDS,
    FakeOpenAI,
    JSONDict,
    Scenario,
    chat_completion_body,
    chat_stream_chunks,
    completion_body,
    completion_stream_chunks,
    embedding_vector,
    garbage_response,
    parse_embedding_inputs,
    parse_prompts,
    plan_chat,
    plan_completion,
)

_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("BAD_REQUEST", "Invalid request (simulated by the fake Databricks workspace)."),
    401: ("UNAUTHENTICATED", "Invalid access token."),
    403: ("PERMISSION_DENIED", "User does not have permission 'Can Query' on serving endpoint '{model}'."),
    404: ("RESOURCE_DOES_NOT_EXIST", "Endpoint with name '{model}' does not exist."),
    429: ("REQUEST_LIMIT_EXCEEDED", "Exceeded workspace rate limit for serving endpoint '{model}'."),
    500: ("INTERNAL_ERROR", "The server encountered an internal error."),
    503: ("TEMPORARILY_UNAVAILABLE", "The service is temporarily unavailable."),
}
_OPENAI_ONLY: Final = ("service_tier", "system_fingerprint", "obfuscation")

ABORT_GRACE_S: Final = 0.05


def error_response(
    status: int, error_code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = orjson.dumps({"error_code": error_code, "message": message})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def scenario_error(status: int, model: str) -> web.Response:
    code, message = _ERRORS.get(
        status, ("TEMPORARILY_UNAVAILABLE" if status >= 500 else "BAD_REQUEST", f"Simulated error {status}.")
    )
    headers = {"retry-after": RETRY_AFTER_S} if status == 429 else None
    return error_response(status, code, message.format(model=model), headers)


def bad_request(message: str) -> web.Response:
    return error_response(400, "BAD_REQUEST", message)


def native_chat_body(plan: Any) -> JSONDict:
    """OpenAI's chat completion as Databricks sends it (no OpenAI-only fields or usage details)."""
    body = {k: v for k, v in chat_completion_body(plan).items() if k not in _OPENAI_ONLY}
    for choice in body["choices"]:
        choice["message"].pop("refusal", None)
        choice["message"].pop("annotations", None)
    body["usage"] = _plain_usage(body["usage"])
    return body


def _plain_usage(usage: JSONDict) -> JSONDict:
    return {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def with_usage_on_last(chunks: Iterator[JSONDict], usage: JSONDict) -> Iterator[JSONDict]:
    pending: JSONDict | None = None
    for chunk in chunks:
        if pending is not None:
            yield pending
        pending = {k: v for k, v in chunk.items() if k not in _OPENAI_ONLY}
    if pending is not None:
        yield {**pending, "usage": usage}


REASONING_PREFIX: Final = "reasoning-"
REASONING_TEXT: Final = "Thinking it over."


def _reasoning_block() -> JSONDict:
    return {
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": REASONING_TEXT, "signature": "sig"}],
    }


def with_reasoning(body: JSONDict) -> JSONDict:
    """A reasoning model's answer: ``content`` is a list of a reasoning block and a text block."""
    for choice in body["choices"]:
        text = choice["message"].get("content")
        if isinstance(text, str):
            choice["message"]["content"] = [_reasoning_block(), {"type": "text", "text": text}]
    return body


def reasoning_chunks(chunks: Iterator[JSONDict]) -> Iterator[JSONDict]:
    """A reasoning model's stream: a reasoning block delta first, then text deltas as blocks."""
    for position, chunk in enumerate(chunks):
        choice = chunk["choices"][0] if chunk["choices"] else None
        if choice is not None and position == 0:
            yield {
                **chunk,
                "choices": [{**choice, "delta": {"role": "assistant", "content": [_reasoning_block()]}}],
            }
            continue
        if choice is not None and isinstance(choice["delta"].get("content"), str):
            delta = {**choice["delta"], "content": [{"type": "text", "text": choice["delta"]["content"]}]}
            choice = {**choice, "delta": delta}
            chunk = {**chunk, "choices": [choice]}
        yield chunk


class FakeDatabricks(FakeOpenAI):
    """A fake workspace; lifecycle, recording and cancellation as in ``FakeOpenAI``.

    ``base_url`` is the workspace host (what the provider's ``host`` and the SDK's ``host`` take).
    """

    def __init__(self, token: str = "dapi-fake-token", host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(token, host, port)

    async def start_async(self, backlog: int = 128) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/serving-endpoints/chat/completions", self._openai_route)
        app.router.add_post("/serving-endpoints/completions", self._openai_route)
        app.router.add_post("/serving-endpoints/embeddings", self._openai_route)
        app.router.add_post("/serving-endpoints/{endpoint}/invocations", self._invocations)
        app.router.add_route("*", "/{tail:.*}", self._no_api)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=backlog)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}"

    @staticmethod
    def _abort(request: web.Request) -> None:
        # A reset makes the client's kernel discard data it received but has not read yet: give it
        # a moment to read the chunks sent before the drop, so "some text arrived" is deterministic.
        time.sleep(ABORT_GRACE_S)
        FakeOpenAI._abort(request)

    def _check_auth(self, authorization: str | None) -> web.Response | None:
        if authorization == self._expected_auth:
            return None
        if not authorization:
            return error_response(
                401, "UNAUTHENTICATED", "Credential was not sent or was of an unsupported type for this API."
            )
        return error_response(401, "UNAUTHENTICATED", "Invalid access token.")

    async def _no_api(self, request: web.Request) -> web.StreamResponse:
        return error_response(
            404, "ENDPOINT_NOT_FOUND", f"No API found for '{request.method} {request.path}'"
        )

    async def _openai_route(self, request: web.Request) -> web.StreamResponse:
        body = request[REQUEST_JSON]
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return bad_request("Missing required field: model.")
        rest = {k: v for k, v in body.items() if k != "model"}
        return await self._serve(request, body["model"], rest)

    async def _invocations(self, request: web.Request) -> web.StreamResponse:
        body = request[REQUEST_JSON]
        if not isinstance(body, dict):
            return bad_request("Request body is not a JSON object.")
        if "model" in body:
            return bad_request("Invalid parameter 'model': the endpoint is named in the URL.")
        return await self._serve(request, request.match_info["endpoint"], body)

    async def _serve(self, request: web.Request, endpoint: str, body: JSONDict) -> web.StreamResponse:
        scenario = Scenario.for_model(endpoint)
        streaming = body.get("stream") is True
        if scenario.error_status is not None:
            return scenario_error(scenario.error_status, endpoint)
        if scenario.garbage:
            return garbage_response(streaming)
        if scenario.stall and not await self._stall(request):
            return scenario_error(503, endpoint)
        if scenario.midstream_drop and not streaming:
            return await self._drop_mid_body(request, {"model": endpoint})
        openai_body = {**body, "model": endpoint}
        slow = SLOW_STREAM_WORDS if scenario.slow_stream else None
        if "messages" in body:
            messages = body["messages"]
            if not isinstance(messages, list) or not messages:
                return bad_request("Field 'messages' must be a non-empty array.")
            plan = plan_chat(openai_body, endpoint, slow)
            reasoning = endpoint.startswith(REASONING_PREFIX)
            if not streaming:
                native = native_chat_body(plan)
                return web.json_response(with_reasoning(native) if reasoning else native, dumps=_dumps)
            chunks = chat_stream_chunks(plan, include_usage=False, include_obfuscation=False)
            if reasoning:
                chunks = reasoning_chunks(chunks)
            return await self._play(
                request, endpoint, with_usage_on_last(chunks, _plain_usage(plan.usage())), scenario
            )
        if "prompt" in body:
            prompts = parse_prompts(body.get("prompt"))
            if prompts is None:
                return bad_request("Field 'prompt' must be a string or an array of strings.")
            cplan = plan_completion(openai_body, endpoint, prompts, slow)
            if not streaming:
                return web.json_response(completion_body(cplan), dumps=_dumps)
            chunks = completion_stream_chunks(cplan, include_usage=False)
            return await self._play(request, endpoint, with_usage_on_last(chunks, cplan.usage()), scenario)
        if "input" in body:
            return self._embeddings_response(endpoint, body)
        return bad_request("Request must contain one of 'messages', 'prompt' or 'input'.")

    async def _play(
        self, request: web.Request, endpoint: str, chunks: Iterator[JSONDict], scenario: Scenario
    ) -> web.StreamResponse:
        return await self._stream(
            request,
            endpoint,
            chunks,
            delay=SLOW_STREAM_DELAY_S if scenario.slow_stream else 0.0,
            drop_after=MIDSTREAM_DROP_AFTER if scenario.midstream_drop else None,
        )

    @staticmethod
    def _embeddings_response(endpoint: str, body: JSONDict) -> web.Response:
        inputs = parse_embedding_inputs(body.get("input"))
        if inputs is None:
            return bad_request("Field 'input' must be a non-empty string or array of strings.")
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": embedding_vector(key, DEFAULT_EMBEDDING_DIMENSIONS),
            }
            for i, (key, _tokens) in enumerate(inputs)
        ]
        tokens = sum(t for _, t in inputs)
        payload = {
            "object": "list",
            "model": endpoint,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return web.json_response(payload, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
