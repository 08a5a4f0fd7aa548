"""A fake of AWS Bedrock Runtime on loopback, speaking its real wire format.

``POST /model/{modelId}/converse``, ``/converse-stream`` (AWS event-stream frames) and ``/invoke``
(Titan / Cohere embeddings). Every request is authenticated like AWS does: a Bedrock API key as
bearer, or a SigV4 signature that the fake RE-COMPUTES with botocore's ``SigV4Auth`` over the
received method, raw path, signed headers and body (wrong → 403 InvalidSignatureException).
Errors are HTTP status + ``x-amzn-ErrorType`` + ``{"message"}``.

Scenarios by model id: those of ``Scenario`` plus ``corrupt-crc`` (a few frames then one with a bad
message CRC) and ``exception-midstream`` (a few frames then a ``throttlingException`` frame).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Final

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from modelyard.providers.eventstream import encode_message

from tests.fakes.openai_upstream import (
    REQUEST_ID,
    REQUEST_JSON,
    RETRY_AFTER_S,
    SLOW_STREAM_DELAY_S,
    SLOW_STREAM_WORDS,
    FakeOpenAI,
    Handler,
    JSONDict,
    RecordedRequest,
    Scenario,
    count_words,
    embedding_vector,
    plan_chat,
    reply_text,
    stop_sequences,
    word_pieces,
)

ACCESS_KEY: Final = "AKIAFAKEBEDROCK00001"
SECRET_KEY: Final = "fake/secret/bedrock/key/0000000000000000"
MIDSTREAM_AFTER: Final = 4
ERROR_TYPES: Final = {
    400: "ValidationException",
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
STOP_REASONS: Final = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def error_response(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"message": message}),
        content_type="application/json",
        headers={
            "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            **(headers or {}),
        },
    )


def frame(event_type: str, payload: JSONDict) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, orjson.dumps(payload))


def exception_frame(kind: str, message: str) -> bytes:
    headers = {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}
    return encode_message(headers, orjson.dumps({"message": message}))


class Invalid(Exception):
    pass


def _text(blocks: Iterable[JSONDict]) -> str:
    return " ".join(b["text"] for b in blocks if isinstance(b.get("text"), str))


def openai_body(native: JSONDict, model: str) -> JSONDict:
    """The OpenAI-shaped body the shared brain plans from."""
    messages = native.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Invalid("messages: at least one message is required")
    out: list[JSONDict] = []
    system = native.get("system") or []
    if system:
        out.append({"role": "system", "content": _text(system)})
    for index, message in enumerate(messages):
        role, blocks = message.get("role"), message.get("content")
        if role not in ("user", "assistant") or not isinstance(blocks, list) or not blocks:
            raise Invalid(f"messages.{index}: a role (user|assistant) and non-empty content are required")
        if index and messages[index - 1].get("role") == role:
            raise Invalid("A conversation must alternate between user and assistant roles.")
        for block in blocks:
            if "text" in block and not block["text"].strip():
                raise Invalid("The text field in the ContentBlock object is blank.")
        if role == "assistant":
            turn: JSONDict = {"role": "assistant", "content": _text(blocks) or None}
            calls = [
                {
                    "id": u["toolUseId"],
                    "type": "function",
                    "function": {"name": u["name"], "arguments": orjson.dumps(u["input"]).decode()},
                }
                for u in (b["toolUse"] for b in blocks if "toolUse" in b)
            ]
            if calls:
                turn["tool_calls"] = calls
            out.append(turn)
            continue
        parts: list[JSONDict] = []
        for block in blocks:
            if "toolResult" in block:
                result = block["toolResult"]
                if "toolConfig" not in native:
                    raise Invalid(
                        "The toolConfig field must be defined when using toolUse and toolResult content blocks."
                    )
                out.append(
                    {"role": "tool", "tool_call_id": result["toolUseId"], "content": _text(result["content"])}
                )
            elif "image" in block:
                image = block["image"]
                if image.get("format") not in ("png", "jpeg", "gif", "webp") or not image.get(
                    "source", {}
                ).get("bytes"):
                    raise Invalid("invalid image block")
                parts.append({"type": "image_url", "image_url": {"url": "fake://image"}})
            elif "text" in block:
                parts.append({"type": "text", "text": block["text"]})
        if parts:
            out.append({"role": "user", "content": parts})
    body: JSONDict = {"model": model, "messages": out}
    inference = native.get("inferenceConfig") or {}
    if "maxTokens" in inference:
        body["max_tokens"] = inference["maxTokens"]
    if inference.get("stopSequences"):
        body["stop"] = inference["stopSequences"]
    config = native.get("toolConfig") or {}
    if config.get("tools"):
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t["toolSpec"]["name"],
                    "parameters": t["toolSpec"]["inputSchema"]["json"],
                },
            }
            for t in config["tools"]
        ]
        choice = config.get("toolChoice") or {}
        if "any" in choice:
            body["tool_choice"] = "required"
        elif "tool" in choice:
            body["tool_choice"] = {"type": "function", "function": {"name": choice["tool"]["name"]}}
    return body


class Rendered:
    def __init__(self, native: JSONDict, model: str, words: int | None) -> None:
        body = openai_body(native, model)
        plan = plan_chat(body, model, words)
        self.stop_reason = STOP_REASONS[plan.finish_reason]
        full = reply_text(body, body["messages"]) if plan.reply_text is not None else ""
        if self.stop_reason == "end_turn" and any(s in full for s in stop_sequences(body.get("stop"))):
            self.stop_reason = "stop_sequence"
        self.text = plan.reply_text or ""
        self.calls = plan.tool_calls[0] if plan.tool_calls else []
        self.usage = {
            "inputTokens": plan.prompt_tokens,
            "outputTokens": plan.completion_tokens(),
            "totalTokens": plan.prompt_tokens + plan.completion_tokens(),
        }

    def response(self) -> JSONDict:
        if self.calls:
            content = [
                {"toolUse": {"toolUseId": c.id, "name": c.name, "input": orjson.loads(c.arguments)}}
                for c in self.calls
            ]
        else:
            content = [{"text": self.text}]
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": self.stop_reason,
            "usage": self.usage,
            "metrics": {"latencyMs": 42},
        }

    def frames(self) -> Iterator[bytes]:
        yield frame("messageStart", {"role": "assistant"})
        if self.calls:
            for index, call in enumerate(self.calls):
                start = {"toolUse": {"toolUseId": call.id, "name": call.name}}
                yield frame("contentBlockStart", {"start": start, "contentBlockIndex": index})
                for fragment in call.fragments():
                    yield frame(
                        "contentBlockDelta",
                        {"delta": {"toolUse": {"input": fragment}}, "contentBlockIndex": index},
                    )
                yield frame("contentBlockStop", {"contentBlockIndex": index})
        else:
            for piece in word_pieces(self.text):
                yield frame("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": 0})
            yield frame("contentBlockStop", {"contentBlockIndex": 0})
        yield frame("messageStop", {"stopReason": self.stop_reason})
        yield frame("metadata", {"usage": self.usage, "metrics": {"latencyMs": 42}})


class FakeBedrock(FakeOpenAI):
    """A fake Bedrock Runtime; lifecycle, recording and cancellation as in ``FakeOpenAI``."""

    def __init__(
        self,
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
        region: str = "us-east-1",
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(api_key or "unused", host, port)
        self.access_key, self.secret_key, self.region, self.bearer = access_key, secret_key, region, api_key
        self.session_token: str | None = None

    async def start_async(self, backlog: int = 128) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._native_middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/model/{model}/converse", self._converse)
        app.router.add_post("/model/{model}/converse-stream", self._converse_stream)
        app.router.add_post("/model/{model}/invoke", self._invoke)
        app.router.add_post("/model/{model}/invoke-with-response-stream", self._invoke_stream)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=backlog)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}"

    def _signature_problem(self, request: web.Request, headers: dict[str, str], body: bytes) -> str | None:
        authorization = headers.get("authorization", "")
        if self.bearer is not None:
            return None if authorization == f"Bearer {self.bearer}" else "bearer"
        fields = dict(
            part.strip().split("=", 1)
            for part in authorization.removeprefix("AWS4-HMAC-SHA256 ").split(",")
            if "=" in part
        )
        signed = fields.get("SignedHeaders", "").split(";")
        if (
            not authorization.startswith("AWS4-HMAC-SHA256 ")
            or "host" not in signed
            or "x-amz-date" not in signed
        ):
            return "missing"
        if not fields.get("Credential", "").startswith(self.access_key + "/"):
            return "unknown key"
        rebuilt = AWSRequest(
            method=request.method,
            url=f"http://{headers['host']}{request.raw_path}",
            headers={name: headers[name] for name in signed if name in headers},
            data=body,
        )
        rebuilt.context["timestamp"] = headers["x-amz-date"]
        auth = SigV4Auth(
            Credentials(self.access_key, self.secret_key, self.session_token), "bedrock", self.region
        )
        canonical = auth.canonical_request(rebuilt)
        expected = auth.signature(auth.string_to_sign(rebuilt, canonical), rebuilt)
        if self.session_token and headers.get("x-amz-security-token") != self.session_token:
            return "token"
        return None if fields.get("Signature") == expected else "signature"

    @web.middleware
    async def _native_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = str(uuid.uuid4())
        body = await request.read()
        parsed: Any = None
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(body) if body else None
        request[REQUEST_JSON] = parsed
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(
            RecordedRequest(request.method, request.raw_path, request.query_string, headers, body, parsed)
        )
        problem = self._signature_problem(request, headers, body)
        if problem == "unknown key" or problem == "bearer":
            return error_response(
                403, "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        if problem is not None:
            return error_response(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided.",
            )
        try:
            response = await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return error_response(404, "UnknownOperationException", "Unknown operation")
        response.headers["x-amzn-RequestId"] = request[REQUEST_ID]
        return response

    def _scenario(self, request: web.Request) -> tuple[str, Scenario, web.Response | None]:
        model = request.match_info["model"]
        scenario = Scenario.for_model(model)
        if scenario.error_status is not None:
            status = scenario.error_status
            kind = ERROR_TYPES.get(
                status, "InternalServerException" if status >= 500 else "ValidationException"
            )
            extra = {"retry-after": RETRY_AFTER_S} if status == 429 else None
            return model, scenario, error_response(status, kind, f"Simulated {kind} for {model}.", extra)
        if not isinstance(request[REQUEST_JSON], dict):
            return model, scenario, error_response(400, "ValidationException", "Malformed input request.")
        return model, scenario, None

    async def _converse(self, request: web.Request) -> web.StreamResponse:
        model, scenario, early = self._scenario(request)
        if early is not None:
            return early
        if scenario.garbage:
            return web.Response(body=b"<html>upstream garbage, not JSON", content_type="application/json")
        if scenario.midstream_drop:
            return await self._drop_mid_body(request, {"model": model})
        try:
            rendered = Rendered(request[REQUEST_JSON], model, None)
        except Invalid as exc:
            return error_response(400, "ValidationException", str(exc))
        return web.Response(body=orjson.dumps(rendered.response()), content_type="application/json")

    async def _converse_stream(self, request: web.Request) -> web.StreamResponse:
        model, scenario, early = self._scenario(request)
        if early is not None:
            return early
        if scenario.garbage:
            return web.Response(
                body=b"<html>upstream garbage, not an event stream</html>",
                content_type="application/vnd.amazon.eventstream",
            )
        try:
            rendered = Rendered(
                request[REQUEST_JSON], model, SLOW_STREAM_WORDS if scenario.slow_stream else None
            )
        except Invalid as exc:
            return error_response(400, "ValidationException", str(exc))
        frames: list[bytes] = list(rendered.frames())
        if model == "corrupt-crc":
            bad = bytearray(frames[MIDSTREAM_AFTER])
            bad[-1] ^= 0xFF
            frames = [*frames[:MIDSTREAM_AFTER], bytes(bad), *frames[MIDSTREAM_AFTER + 1 :]]
        elif model == "exception-midstream":
            frames = [
                *frames[:MIDSTREAM_AFTER],
                exception_frame("throttlingException", "Too many requests, please wait."),
            ]
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/vnd.amazon.eventstream"}
        )
        await response.prepare(request)
        try:
            for sent, data in enumerate(frames):
                if scenario.midstream_drop and sent >= MIDSTREAM_AFTER:
                    self._abort(request)
                    return response
                if scenario.slow_stream and await self._pause(SLOW_STREAM_DELAY_S):
                    self._abort(request)
                    return response
                if self._client_gone(request):
                    raise ConnectionResetError("the client went away")
                await response.write(data)
            await response.write_eof()
        except ConnectionError:
            self._record_cancel(model, request[REQUEST_ID])
        except asyncio.CancelledError:
            if not self._is_stopping:
                self._record_cancel(model, request[REQUEST_ID])
            raise
        return response

    async def _invoke(self, request: web.Request) -> web.StreamResponse:
        model, _scenario, early = self._scenario(request)
        if early is not None:
            return early
        native = request[REQUEST_JSON]
        if "titan-embed" in model:
            text = native.get("inputText")
            if (
                not isinstance(text, str)
                or not text
                or set(native) - {"inputText", "dimensions", "normalize", "embeddingTypes"}
            ):
                return error_response(
                    400,
                    "ValidationException",
                    "Malformed input request, please reformat your input and try again.",
                )
            if "v1" in model and set(native) != {"inputText"}:
                return error_response(
                    400, "ValidationException", "extraneous key [dimensions] is not permitted"
                )
            vector = embedding_vector(text.encode(), int(native.get("dimensions", 8)))
            body = {"embedding": vector, "inputTextTokenCount": count_words(text)}
            return web.Response(body=orjson.dumps(body), content_type="application/json")
        if "cohere.embed" in model:
            texts = native.get("texts")
            if not isinstance(texts, list) or not texts or not native.get("input_type"):
                return error_response(400, "ValidationException", "Malformed input request")
            body = {
                "embeddings": [embedding_vector(t.encode(), 8) for t in texts],
                "id": str(uuid.uuid4()),
                "response_type": "embeddings_floats",
                "texts": texts,
            }
            tokens = str(sum(count_words(t) for t in texts))
            return web.Response(
                body=orjson.dumps(body),
                content_type="application/json",
                headers={"X-Amzn-Bedrock-Input-Token-Count": tokens},
            )
        try:
            text_body = TextFamily(model, native)
        except Invalid as exc:
            return error_response(400, "ValidationException", str(exc))
        headers = {
            "X-Amzn-Bedrock-Input-Token-Count": str(text_body.plan.prompt_tokens),
            "X-Amzn-Bedrock-Output-Token-Count": str(text_body.plan.completion_tokens()),
        }
        return web.Response(
            body=orjson.dumps(text_body.body()), content_type="application/json", headers=headers
        )

    async def _invoke_stream(self, request: web.Request) -> web.StreamResponse:
        model, scenario, early = self._scenario(request)
        if early is not None:
            return early
        try:
            text_body = TextFamily(model, request[REQUEST_JSON])
        except Invalid as exc:
            return error_response(400, "ValidationException", str(exc))
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/vnd.amazon.eventstream"}
        )
        await response.prepare(request)
        for sent, data in enumerate(text_body.frames()):
            if scenario.midstream_drop and sent >= 2:
                self._abort(request)
                return response
            await response.write(data)
        await response.write_eof()
        return response


TEXT_STOP: Final = {
    "anthropic": {"stop": "stop_sequence", "length": "max_tokens"},
    "titan": {"stop": "FINISH", "length": "LENGTH"},
    "cohere": {"stop": "COMPLETE", "length": "MAX_TOKENS"},
    "ai21": {"stop": "endoftext", "length": "length"},
    "other": {"stop": "stop", "length": "length"},
}


class TextFamily:
    """A native text-completion request (InvokeModel) planned by the brain, rendered per family."""

    def __init__(self, model: str, native: Any) -> None:
        self.family = next(
            (f for f in ("anthropic", "titan", "cohere", "ai21", "meta", "mistral") if f in model), None
        )
        if self.family is None or not isinstance(native, dict):
            raise Invalid("The provided model identifier is invalid.")
        prompt = native.get("inputText" if self.family == "titan" else "prompt")
        if not isinstance(prompt, str) or not prompt:
            raise Invalid("Malformed input request: prompt is required")
        if self.family == "anthropic":
            if not prompt.startswith("\n\nHuman:") or not prompt.endswith("\n\nAssistant:"):
                raise Invalid('prompt must start with "\n\nHuman:" and end with "\n\nAssistant:"')
            if not isinstance(native.get("max_tokens_to_sample"), int):
                raise Invalid("max_tokens_to_sample: required key not found")
            prompt = prompt.removeprefix("\n\nHuman:").removesuffix("\n\nAssistant:").strip()
        config = native.get("textGenerationConfig") or {}
        limit = next(
            (
                native.get(k) or config.get(k)
                for k in ("max_tokens_to_sample", "maxTokenCount", "max_tokens", "maxTokens", "max_gen_len")
                if native.get(k) or config.get(k)
            ),
            None,
        )
        stop = (
            native.get("stop_sequences")
            or native.get("stopSequences")
            or native.get("stop")
            or config.get("stopSequences")
        )
        body: JSONDict = {"model": model, "messages": [{"role": "user", "content": prompt}]}
        if limit:
            body["max_tokens"] = limit
        if stop:
            body["stop"] = stop
        self.plan = plan_chat(body, model)
        self.text = self.plan.reply_text or ""
        key = self.family if self.family in TEXT_STOP else "other"
        self.stop = TEXT_STOP[key][self.plan.finish_reason if self.plan.finish_reason == "length" else "stop"]

    def body(self, text: str | None = None, stop: str | None = "") -> JSONDict:
        text = self.text if text is None else text
        stop = self.stop if stop == "" else stop
        tokens = self.plan.completion_tokens()
        if self.family == "anthropic":
            return {"type": "completion", "completion": text, "stop_reason": stop, "stop": None}
        if self.family == "titan":
            result = {"tokenCount": tokens, "outputText": text, "completionReason": stop}
            return {"inputTextTokenCount": self.plan.prompt_tokens, "results": [result]}
        if self.family == "cohere":
            return {
                "id": "c1",
                "generations": [{"id": "g1", "text": text, "finish_reason": stop}],
                "prompt": "",
            }
        if self.family == "ai21":
            return {"id": 1, "completions": [{"data": {"text": text}, "finishReason": {"reason": stop}}]}
        if self.family == "meta":
            return {
                "generation": text,
                "prompt_token_count": self.plan.prompt_tokens,
                "generation_token_count": tokens,
                "stop_reason": stop,
            }
        return {"outputs": [{"text": text, "stop_reason": stop}]}

    def frames(self) -> Iterator[bytes]:
        pieces = word_pieces(self.text) or [""]
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            chunk = self.body(piece, self.stop if last else None)
            if last:
                chunk["amazon-bedrock-invocationMetrics"] = {
                    "inputTokenCount": self.plan.prompt_tokens,
                    "outputTokenCount": self.plan.completion_tokens(),
                }
            payload = {"bytes": base64.b64encode(orjson.dumps(chunk)).decode()}
            yield frame("chunk", payload)
