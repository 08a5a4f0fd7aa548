"""A fake AI21 Studio (Jamba chat) on loopback, speaking its REST wire format.

* ``POST /studio/v1/chat/completions`` with ``Authorization: Bearer <key>``: body ``{model,
  messages, tools, max_tokens, temperature, top_p, stop, n, stream, response_format, documents}``.
  The fake is strict where Jamba is narrower than OpenAI: message ``content`` must be a string
  (``null`` only for an assistant message with ``tool_calls``), roles are system/user/assistant/tool,
  ``response_format`` is ``text`` or ``json_object``, and any other top-level field (``tool_choice``,
  ``seed``, ``logprobs``…) is a 422 — so the adapter is checked to send only what Jamba takes.
* Answers ``{id, model, choices: [{index, message: {role, content, tool_calls}, logprobs,
  finish_reason}], usage}`` (no ``object``/``created``); streams are ``data: {json}`` lines (the only
  line type the official SDK's decoder accepts) — a role delta, content deltas, tool-call deltas,
  a last chunk with ``finish_reason`` and ``usage`` (``null`` on every other chunk) — then
  ``data: [DONE]``.
* Errors are FastAPI's ``{"detail": "..."}`` (validation errors: a list of ``{loc, msg, type}``).

Replies come from the OpenAI fake's provider-neutral brain, so the conformance assertions hold.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any, Final

import orjson
from aiohttp import web

from tests.fakes.openai_upstream import (
    MIDSTREAM_DROP_AFTER,
    REQUEST_JSON,
    RETRY_AFTER_S,
    SLOW_STREAM_DELAY_S,
    SLOW_STREAM_WORDS,
    ChatPlan,
    FakeOpenAI,
    JSONDict,
    Scenario,
    chat_stream_choices,
    garbage_response,
    plan_chat,
)

ALLOWED_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "tools",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "n",
        "stream",
        "response_format",
        "documents",
    }
)
ROLES: Final = frozenset({"system", "user", "assistant", "tool"})
MAX_TOKENS_LIMIT: Final = 4096
_MESSAGES: Final[dict[int, str]] = {
    400: "Bad request (simulated by the fake AI21 upstream).",
    401: "Forbidden: Bad or missing API token.",
    403: "Forbidden: this API key has no access to {model}.",
    404: "Model {model} not found.",
    422: "Unprocessable entity.",
    429: "Too many requests.",
    500: "Internal server error.",
    503: "Service unavailable.",
}

ABORT_GRACE_S: Final = 0.05


def detail_response(status: int, detail: Any, headers: dict[str, str] | None = None) -> web.Response:
    body = orjson.dumps({"detail": detail})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def invalid(location: list[str | int], message: str, kind: str = "value_error") -> web.Response:
    return detail_response(422, [{"loc": ["body", *location], "msg": message, "type": kind}])


def scenario_error(status: int, model: str) -> web.Response:
    message = _MESSAGES.get(status, f"Simulated upstream error {status}.").format(model=model)
    headers = {"retry-after": RETRY_AFTER_S} if status == 429 else None
    return detail_response(status, message, headers)


def validate(body: JSONDict) -> web.Response | None:
    """Jamba's request validation (the parts an adapter can get wrong); None when acceptable."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return invalid(["model"], "field required", "value_error.missing")
    for name in body:
        if name not in ALLOWED_FIELDS:
            return invalid([name], "extra fields not permitted", "value_error.extra")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return invalid(["messages"], "ensure this value has at least 1 items")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return invalid(["messages", i, "role"], "role must be one of system, user, assistant, tool")
        content = message.get("content")
        nullable = message["role"] == "assistant" and message.get("tool_calls")
        if not isinstance(content, str) and not (content is None and nullable):
            return invalid(["messages", i, "content"], "str type expected", "type_error.str")
        if message["role"] == "tool" and not isinstance(message.get("tool_call_id"), str):
            return invalid(["messages", i, "tool_call_id"], "field required", "value_error.missing")
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict) or response_format.get("type") not in ("text", "json_object")
    ):
        return invalid(["response_format", "type"], "unexpected value; permitted: 'text', 'json_object'")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or not 0 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        return invalid(["max_tokens"], f"ensure this value is less than or equal to {MAX_TOKENS_LIMIT}")
    return None


def completion_body(plan: ChatPlan, chat_id: str) -> JSONDict:
    choices = []
    for index in range(plan.n):
        calls = [call.as_message_field() for call in plan.tool_calls[index]] if plan.tool_calls else None
        message = {"role": "assistant", "content": plan.reply_text, "tool_calls": calls}
        choices.append(
            {"index": index, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
        )
    return {"id": chat_id, "model": plan.model, "choices": choices, "usage": _usage(plan)}


def _usage(plan: ChatPlan) -> JSONDict:
    usage = plan.usage()
    return {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def stream_chunks(plan: ChatPlan, chat_id: str) -> Iterator[JSONDict]:
    chunks = []
    for choice in chat_stream_choices(plan):
        delta = {k: v for k, v in choice["delta"].items() if k != "refusal" and v is not None}
        if delta.get("role") and delta.get("content") == "":
            del delta["content"]
        native = {
            "index": choice["index"],
            "delta": delta,
            "logprobs": None,
            "finish_reason": choice["finish_reason"],
        }
        chunks.append({"id": chat_id, "choices": [native], "usage": None})
    chunks[-1]["usage"] = _usage(plan)
    return iter(chunks)


class FakeAI21(FakeOpenAI):
    """A fake AI21 Studio; lifecycle, recording and cancellation as in ``FakeOpenAI``.

    ``base_url`` is ``http://127.0.0.1:<port>/studio/v1`` (the SDK's ``api_host``).
    """

    def __init__(self, api_key: str = "ai21-fake-key", host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(api_key, host, port)

    async def start_async(self, backlog: int = 128) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/studio/v1/chat/completions", self._chat)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=backlog)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}/studio/v1"

    @staticmethod
    def _abort(request: web.Request) -> None:
        # A reset makes the client's kernel discard data it received but has not read yet: give it
        # a moment to read the chunks sent before the drop, so "some text arrived" is deterministic.
        time.sleep(ABORT_GRACE_S)
        FakeOpenAI._abort(request)

    def _check_auth(self, authorization: str | None) -> web.Response | None:
        if authorization == self._expected_auth:
            return None
        return detail_response(401, _MESSAGES[401])

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return detail_response(404, "Not Found")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = request[REQUEST_JSON]
        if not isinstance(body, dict):
            return invalid([], "value is not a valid dict", "type_error.dict")
        model = body.get("model")
        if isinstance(model, str):
            scenario = Scenario.for_model(model)
            streaming = body.get("stream") is True
            if scenario.error_status is not None:
                return scenario_error(scenario.error_status, model)
            if scenario.garbage:
                return garbage_response(streaming)
            if scenario.stall and not await self._stall(request):
                return scenario_error(503, model)
            if scenario.midstream_drop and not streaming:
                return await self._drop_mid_body(request, body)
        problem = validate(body)
        if problem is not None:
            return problem
        model = body["model"]
        scenario = Scenario.for_model(model)
        plan = plan_chat(body, model, SLOW_STREAM_WORDS if scenario.slow_stream else None)
        chat_id = "chat-" + uuid.uuid4().hex
        if body.get("stream") is not True:
            return web.Response(
                body=orjson.dumps(completion_body(plan, chat_id)), content_type="application/json"
            )
        return await self._stream(
            request,
            model,
            stream_chunks(plan, chat_id),
            delay=SLOW_STREAM_DELAY_S if scenario.slow_stream else 0.0,
            drop_after=MIDSTREAM_DROP_AFTER if scenario.midstream_drop else None,
        )
