"""Pure conversion of the gateway's chat requests into Gemini's generateContent body, shared by
the Gemini API and Vertex AI adapters. No I/O here."""

from __future__ import annotations

import mimetypes
import re
from typing import Any

import msgspec
from msgspec import UNSET

from modelyard.errors import ClientError
from modelyard.schema.chat import (
    ChatRequest,
    ImageUrlPart,
    JsonObjectFormat,
    JsonSchemaFormat,
    Message,
    NamedToolChoice,
    RefusalPart,
    TextPart,
)

SIGNATURE_SEPARATOR = "__thought__"
"""A functionCall's thoughtSignature travels in the OpenAI tool-call id (`call_…__thought__<sig>`)
and is put back on the functionCall part when the client sends the call back."""


def words(text: str) -> list[str]:
    return text.split()


def _spellings(names: str) -> dict[str, str]:
    """Each camelCase name and its snake_case spelling → the camelCase name."""
    result = {}
    for name in names.split():
        result[name] = name
        result[re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)] = name
    return result


"""Gemini finishReason → OpenAI finish_reason; any other reason (OTHER, MALFORMED_FUNCTION_CALL…)
becomes "stop"."""

"""Google's canonical status → HTTP status, used when no HTTP status is at hand (stream errors)."""

PASSED_EXTRAS = _spellings("safetySettings cachedContent labels")
"""Top-level generateContent fields a client may send as extras (either spelling)."""

GENERATION_EXTRAS = _spellings(
    "thinkingConfig responseModalities mediaResolution speechConfig responseJsonSchema"
)
"""generationConfig fields a client may send as top-level extras (either spelling)."""

_SCHEMA_KEYS = frozenset(
    words(
        "type format title description nullable enum maxItems minItems properties required minProperties"
        " maxProperties minLength maxLength pattern example anyOf propertyOrdering default items minimum maximum"
    )
)


# --------------------------------------------------------------------------------------------------
# Request


def _bad(message: str, param: str = "messages") -> ClientError:
    return ClientError(message, status=400, param=param, code="unsupported_parameter")


def plain(value: Any) -> Any:
    """An extras value as a plain Python value (REST extras are still-encoded JSON)."""
    return msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.text for part in content if isinstance(part, TextPart))
    return ""


def image_part(url: str) -> dict[str, Any]:
    """A data URL → inlineData; any other URL → fileData (Google fetches gs:// and https URLs)."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise _bad("Image data URLs must be base64 encoded (data:<media type>;base64,<data>).")
        return {"inlineData": {"mimeType": media_type, "data": data}}
    path = url.split("?", 1)[0].split("#", 1)[0]
    mime_type = mimetypes.guess_type(path)[0] or "image/jpeg"
    return {"fileData": {"mimeType": mime_type, "fileUri": url}}


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, TextPart):
            if part.text:
                parts.append({"text": part.text})
        elif isinstance(part, ImageUrlPart):
            parts.append(image_part(part.image_url.url))
        elif isinstance(part, RefusalPart):
            parts.append({"text": part.refusal})
        else:
            kind = type(part).__name__.removesuffix("Part").lower()
            raise _bad(f"Gemini models do not accept {kind} content parts through this gateway.")
    return parts


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(text or "{}")
    except msgspec.DecodeError:
        raise _bad(f"{what} is not valid JSON.") from None
    if not isinstance(value, dict):
        raise _bad(f"{what} is not a JSON object.")
    return value


def _function_calls(message: Message, names: dict[str, str]) -> list[dict[str, Any]]:
    parts = []
    for call in message.tool_calls or []:
        names[call.id] = call.function.name
        args = _json_object(call.function.arguments, f"Tool call {call.id} arguments")
        part: dict[str, Any] = {"functionCall": {"name": call.function.name, "args": args}}
        _, sep, signature = call.id.partition(SIGNATURE_SEPARATOR)
        if sep and signature:
            part["thoughtSignature"] = signature  # Gemini 3 requires it back with the call
        parts.append(part)
    return parts


def _function_response(message: Message, names: dict[str, str]) -> dict[str, Any]:
    call_id = message.tool_call_id if isinstance(message.tool_call_id, str) else ""
    name = names.get(call_id) or (message.name if isinstance(message.name, str) else "")
    if not name:
        raise _bad(f"Tool message {call_id!r} answers no tool call of an earlier assistant message.")
    text = _text_of(message.content)
    try:
        value = msgspec.json.decode(text) if text else None
    except msgspec.DecodeError:
        value = None
    response = value if isinstance(value, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def convert_messages(messages: list[Message]) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, Gemini contents)."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for message in messages:
        if message.role in ("system", "developer"):
            text = _text_of(message.content)
            if text:
                system.append(text)
            continue
        if message.role == "tool":
            role, parts = "user", [_function_response(message, names)]
        elif message.role == "assistant":
            role, parts = "model", _parts(message.content) + _function_calls(message, names)
        else:
            role, parts = "user", _parts(message.content)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def gemini_schema(schema: Any) -> Any:
    """A JSON Schema reduced to the OpenAPI subset of Gemini's `Schema` (unknown keys dropped,
    `type: [T, "null"]` → `type: T, nullable: true`)."""
    if isinstance(schema, list):
        return [gemini_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, list):
            kinds = [kind for kind in value if kind != "null"]
            if len(kinds) < len(value):
                result["nullable"] = True
            if kinds:
                result["type"] = kinds[0]
        elif key == "properties" and isinstance(value, dict):
            result[key] = {name: gemini_schema(sub) for name, sub in value.items()}
        elif key == "anyOf" and isinstance(value, list):
            result[key] = [gemini_schema(sub) for sub in value]
        elif key == "items":
            result[key] = gemini_schema(value)
        elif key in _SCHEMA_KEYS:
            result[key] = value
    return result


def _tools(request: ChatRequest) -> list[dict[str, Any]]:
    declarations = []
    for tool in request.tools or []:
        function = tool.function
        declaration: dict[str, Any] = {"name": function.name}
        if isinstance(function.description, str):
            declaration["description"] = function.description
        if isinstance(function.parameters, dict) and function.parameters.get("properties"):
            declaration["parameters"] = gemini_schema(function.parameters)
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        config: dict[str, Any] = {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
    elif choice in ("auto", "none", "required"):
        config = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[str(choice)]}
    else:
        return None
    return {"functionCallingConfig": config}


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = request.max_completion_tokens
    if not isinstance(max_tokens, int):
        max_tokens = request.max_tokens
    simple = {
        "temperature": request.temperature,
        "topP": request.top_p,
        "topK": request.top_k,
        "maxOutputTokens": max_tokens,
        "candidateCount": request.n,
        "seed": request.seed,
        "presencePenalty": request.presence_penalty,
        "frequencyPenalty": request.frequency_penalty,
    }
    for key, value in simple.items():
        if value is not None and value is not UNSET:
            config[key] = value
    stop = request.stop
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = list(stop)
    response_format = request.response_format
    if isinstance(response_format, JsonObjectFormat | JsonSchemaFormat):
        config["responseMimeType"] = "application/json"
    if isinstance(response_format, JsonSchemaFormat) and isinstance(response_format.json_schema.schema, dict):
        config["responseSchema"] = gemini_schema(response_format.json_schema.schema)
    return config


def chat_payload(request: ChatRequest) -> dict[str, Any]:
    """The generateContent / streamGenerateContent body for a chat request."""
    system, contents = convert_messages(request.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    tools = _tools(request)
    if tools:
        body["tools"] = tools
        tool_config = _tool_config(request)
        if tool_config:
            body["toolConfig"] = tool_config
    generation = _generation_config(request)
    for key, value in request.extras.items():
        if key in PASSED_EXTRAS:
            body[PASSED_EXTRAS[key]] = plain(value)
        elif key in GENERATION_EXTRAS:
            generation.setdefault(GENERATION_EXTRAS[key], plain(value))
    if generation:
        body["generationConfig"] = generation
    return body
