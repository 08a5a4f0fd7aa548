"""A fake Azure OpenAI resource (data plane) plus a fake Microsoft Entra ID token endpoint, on loopback.

It reuses the OpenAI fake's server plumbing and its provider-neutral brain (`plan_chat`, `Scenario`)
and speaks Azure's wire format: ``POST /openai/deployments/{deployment}/{chat/completions,
completions,embeddings}?api-version=...`` authenticated by ``api-key: KEY`` or ``Authorization:
Bearer <token issued by the fake tenant>``; the deployment in the path is the model (the body's
``model`` is ignored, as Azure does). Responses carry ``prompt_filter_results`` and per-choice
``content_filter_results``; streams start with a prompt-filter chunk without choices and carry an
asynchronous-filter annotation chunk (a choice without delta) before the finish chunk. Errors use
Azure's bodies (``{"error": {"code": "429", "message": ...}}``, ``DeploymentNotFound`` …).

Extra scenarios: ``content-filter`` (400 ``content_filter`` / ``ResponsibleAIPolicyViolation``) and
``filtered-output`` (200 whose completion was cut with finish reason ``content_filter``).

Token endpoint: ``POST /{tenant}/oauth2/v2.0/token`` (client credentials form); tokens live
``token_lifetime`` seconds (the data plane refuses expired ones with Azure's 401) and each fetch
may be slowed by ``token_delay`` to make concurrent fetches overlap.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Final

import orjson
from aiohttp import web

from tests.fakes.openai_upstream import (
    REQUEST_ID,
    REQUEST_JSON,
    FakeOpenAI,
    Handler,
    JSONDict,
    RecordedRequest,
    Scenario,
    bad_request,
    chat_completion_body,
    chat_stream_chunks,
    completion_stream_chunks,
    parse_prompts,
    plan_chat,
    plan_completion,
)

UNDERLYING_MODEL: Final = "gpt-4o-2024-11-20"
SCOPE: Final = "https://cognitiveservices.azure.com/.default"
SAFE: Final = {
    name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual", "violence")
}
FILTERED: Final = {**SAFE, "violence": {"filtered": True, "severity": "high"}}
PROMPT_FILTER: Final = [{"prompt_index": 0, "content_filter_results": SAFE}]

_AZURE_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("BadRequest", "Invalid request (simulated by the fake Azure resource)."),
    401: (
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
        "key for an active subscription and use a correct regional API endpoint for your resource.",
    ),
    403: (
        "PermissionDenied",
        "The principal lacks the required data action "
        "`Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action`.",
    ),
    404: (
        "DeploymentNotFound",
        "The API deployment for this resource does not exist. If you created the deployment within the "
        "last 5 minutes, please wait a moment and try again.",
    ),
    429: (
        "429",
        "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have "
        "exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 7 seconds.",
    ),
    500: ("InternalServerError", "The server had an error while processing your request. Sorry about that!"),
    503: ("ServiceUnavailable", "The service is temporarily unable to process your request."),
}


def azure_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": {"code": code, "message": message}}),
        content_type="application/json",
        headers=headers,
    )


def scenario_error(status: int) -> web.Response:
    code, message = _AZURE_ERRORS.get(status, (str(status), f"Simulated upstream error {status}."))
    headers = {"retry-after": "7", "retry-after-ms": "7000"} if status == 429 else None
    return azure_error(status, code, message, headers)


def content_filter_error() -> web.Response:
    body = {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
            "management policy. Please modify your prompt and retry.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": FILTERED},
        }
    }
    return web.Response(status=400, body=orjson.dumps(body), content_type="application/json")


def azure_chat_body(plan: Any, filtered: bool) -> JSONDict:
    body = chat_completion_body(plan)
    body.pop("service_tier", None)
    body["model"] = UNDERLYING_MODEL
    body["prompt_filter_results"] = PROMPT_FILTER
    for choice in body["choices"]:
        choice["content_filter_results"] = FILTERED if filtered else SAFE
        choice["message"].pop("annotations", None)
        if filtered:
            choice["message"]["content"] = None
            choice["finish_reason"] = "content_filter"
    return body


def azure_chat_chunks(plan: Any, include_usage: bool, filtered: bool) -> Iterator[JSONDict]:
    """Azure's stream: prompt-filter chunk, OpenAI's chunks annotated, an async-filter annotation."""
    yield {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": PROMPT_FILTER,
    }
    chunks = list(chat_stream_chunks(plan, include_usage=include_usage, include_obfuscation=False))
    for chunk in chunks:
        chunk.pop("service_tier", None)
        chunk["model"] = UNDERLYING_MODEL
        for choice in chunk["choices"]:
            has_content = bool(choice["delta"].get("content"))
            choice["content_filter_results"] = SAFE if has_content else {}
            if choice["finish_reason"] is not None:
                yield {
                    "choices": [
                        {
                            "index": choice["index"],
                            "finish_reason": None,
                            "content_filter_results": SAFE,
                            "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 9},
                        }
                    ],
                    "created": 0,
                    "id": "",
                    "model": "",
                    "object": "",
                }
                if filtered:
                    choice["finish_reason"] = "content_filter"
                    choice["content_filter_results"] = FILTERED
        yield chunk


class FakeAzureOpenAI(FakeOpenAI):
    """Azure OpenAI data plane + Entra ID token endpoint; ``base_url`` is both endpoint and authority."""

    def __init__(
        self,
        api_key: str | None = "azure-fake-key-0001",
        *,
        tenant_id: str = "00000000-0000-0000-0000-00000000fa4e",
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        token_lifetime: float = 3600.0,
        token_delay: float = 0.0,
    ) -> None:
        super().__init__(api_key or "unused")
        self.api_key_accepted = api_key
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.token_delay = token_delay
        self.token_requests: list[RecordedRequest] = []
        self.tokens: dict[str, float] = {}
        """Issued token → monotonic expiry."""
        self.token_failure: int | None = None
        """When set, the token endpoint answers this status (AAD's error body)."""

    def clear(self) -> None:
        super().clear()
        self.token_requests.clear()

    def issue_token(self) -> str:
        token = "fake-entra-" + uuid.uuid4().hex
        self.tokens[token] = time.monotonic() + self.token_lifetime
        return token

    async def start_async(self, backlog: int = 128) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        deployments = "/openai/deployments/{deployment}"
        app.router.add_post(deployments + "/chat/completions", self._azure_chat)
        app.router.add_post(deployments + "/completions", self._azure_completions)
        app.router.add_post(deployments + "/embeddings", self._azure_embeddings)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.on_response_prepare.append(self._add_azure_headers)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=backlog)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}"

    # ---- plumbing -----------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = "req_" + uuid.uuid4().hex
        raw = await request.read()
        parsed: Any = None
        if raw and request.content_type == "application/json":
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                parsed = None
        request[REQUEST_JSON] = parsed
        headers = {name.lower(): value for name, value in request.headers.items()}
        record = RecordedRequest(request.method, request.path, request.query_string, headers, raw, parsed)
        if request.path.endswith("/oauth2/v2.0/token"):
            self.token_requests.append(record)
            return await handler(request)
        self.requests.append(record)
        if not request.query.get("api-version"):
            return azure_error(404, "404", "Resource not found")
        refused = self._check_azure_auth(headers)
        if refused is not None:
            return refused
        try:
            return await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return azure_error(404, "404", "Resource not found")

    def _check_azure_auth(self, headers: dict[str, str]) -> web.Response | None:
        key = headers.get("api-key")
        if key is not None and self.api_key_accepted is not None and key == self.api_key_accepted:
            return None
        bearer = headers.get("authorization", "")
        if key is None and bearer.startswith("Bearer "):
            expiry = self.tokens.get(bearer.removeprefix("Bearer "))
            if expiry is not None and time.monotonic() < expiry:
                return None
            return azure_error(
                401,
                "401",
                "Unauthorized. Access token is missing, invalid, audience is incorrect "
                "(https://cognitiveservices.azure.com), or have expired.",
            )
        return scenario_error(401)

    @staticmethod
    async def _add_azure_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["apim-request-id"] = request.get(REQUEST_ID, "req_unknown")
        response.headers["x-ms-region"] = "Sweden Central"

    async def _common_scenarios(
        self, request: web.Request, body: JSONDict
    ) -> tuple[str, Scenario] | web.StreamResponse:
        model = body["model"]
        scenario = Scenario.for_model(model)
        if scenario.error_status is not None:
            return scenario_error(scenario.error_status)
        if model == "content-filter":
            return content_filter_error()
        return await super()._common_scenarios(request, body)

    def _body_for(self, request: web.Request) -> JSONDict | web.Response:
        """The JSON body with ``model`` replaced by the deployment from the path (Azure's routing)."""
        parsed = request[REQUEST_JSON]
        if not isinstance(parsed, dict):
            return bad_request("The request body is not valid JSON.")
        body = {**parsed, "model": urllib.parse.unquote(request.match_info["deployment"])}
        request[REQUEST_JSON] = body
        return body

    def _stream_azure(
        self, request: web.Request, model: str, scenario: Scenario, chunks: Iterable[JSONDict]
    ) -> Any:
        return self._stream(
            request,
            model,
            chunks,
            delay=0.1 if scenario.slow_stream else 0.0,
            drop_after=4 if scenario.midstream_drop else None,
        )

    # ---- endpoints ----------------------------------------------------------------------------------

    async def _azure_chat(self, request: web.Request) -> web.StreamResponse:
        body = self._body_for(request)
        if isinstance(body, web.Response):
            return body
        outcome = await self._common_scenarios(request, body)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        model, scenario = outcome
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return bad_request("'messages' is a required property", "messages")
        plan = plan_chat(body, model, 200 if scenario.slow_stream else None)
        filtered = model == "filtered-output"
        if not body.get("stream"):
            return web.Response(
                body=orjson.dumps(azure_chat_body(plan, filtered)), content_type="application/json"
            )
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        chunks = azure_chat_chunks(plan, include_usage, filtered)
        return await self._stream_azure(request, model, scenario, chunks)

    async def _azure_completions(self, request: web.Request) -> web.StreamResponse:
        body = self._body_for(request)
        if isinstance(body, web.Response):
            return body
        if not body.get("stream"):
            return await self._completions(request)
        outcome = await self._common_scenarios(request, body)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        model, scenario = outcome
        prompts = parse_prompts(body.get("prompt"))
        if prompts is None:
            return bad_request("Invalid 'prompt'.", "prompt")
        plan = plan_completion(body, model, prompts, 200 if scenario.slow_stream else None)
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        first = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": PROMPT_FILTER,
        }
        chunks = itertools.chain([first], completion_stream_chunks(plan, include_usage))
        return await self._stream_azure(request, model, scenario, chunks)

    async def _azure_embeddings(self, request: web.Request) -> web.StreamResponse:
        body = self._body_for(request)
        if isinstance(body, web.Response):
            return body
        return await self._embeddings(request)

    async def _token(self, request: web.Request) -> web.StreamResponse:
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        if self.token_failure is not None:
            return web.json_response(
                {"error": "temporarily_unavailable", "error_description": "AADSTS50000: simulated outage."},
                status=self.token_failure,
            )
        form = await request.post()
        if request.match_info["tenant"] != self.tenant_id:
            return web.json_response(
                {"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found."},
                status=400,
            )
        if form.get("grant_type") != "client_credentials" or form.get("scope") != SCOPE:
            return web.json_response(
                {"error": "invalid_request", "error_description": "AADSTS900144: bad grant or scope."},
                status=400,
            )
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                },
                status=401,
            )
        lifetime = self.token_lifetime
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": int(lifetime) if lifetime == int(lifetime) else lifetime,
                "ext_expires_in": int(lifetime),
                "access_token": self.issue_token(),
            }
        )
