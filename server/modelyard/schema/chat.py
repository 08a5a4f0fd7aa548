"""Chat completions: requests, responses and stream chunks in OpenAI's shapes."""

from __future__ import annotations

from typing import Any, Literal

from msgspec import UNSET, UnsetType, field

from modelyard.schema.common import Base, Extras, Stop, StreamOptions, Usage

Role = Literal["system", "developer", "user", "assistant", "tool"]


class TextPart(Base, tag="text", tag_field="type"):
    text: str


class ImageUrl(Base):
    url: str
    detail: str | UnsetType = UNSET


class ImageUrlPart(Base, tag="image_url", tag_field="type"):
    image_url: ImageUrl


class InputAudio(Base):
    data: str
    format: str


class InputAudioPart(Base, tag="input_audio", tag_field="type"):
    input_audio: InputAudio


class FileRef(Base):
    file_data: str | UnsetType = UNSET
    file_id: str | UnsetType = UNSET
    filename: str | UnsetType = UNSET


class FilePart(Base, tag="file", tag_field="type"):
    file: FileRef


class RefusalPart(Base, tag="refusal", tag_field="type"):
    refusal: str


ContentPart = TextPart | ImageUrlPart | InputAudioPart | FilePart | RefusalPart


class FunctionCall(Base):
    name: str
    arguments: str


class ToolCall(Base):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class Message(Base):
    role: Role
    content: str | list[ContentPart] | UnsetType | None = UNSET
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET
    refusal: str | UnsetType | None = UNSET


class FunctionDefinition(Base):
    name: str
    description: str | UnsetType = UNSET
    parameters: dict[str, Any] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class Tool(Base):
    function: FunctionDefinition
    type: Literal["function"] = "function"


class NamedFunction(Base):
    name: str


class NamedToolChoice(Base):
    function: NamedFunction
    type: Literal["function"] = "function"


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchema(Base):
    name: str
    description: str | UnsetType = UNSET
    schema: dict[str, Any] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class TextFormat(Base, tag="text", tag_field="type"):
    pass


class JsonObjectFormat(Base, tag="json_object", tag_field="type"):
    pass


class JsonSchemaFormat(Base, tag="json_schema", tag_field="type"):
    json_schema: JsonSchema


ResponseFormat = TextFormat | JsonObjectFormat | JsonSchemaFormat


class ChatRequest(Base):
    model: str
    messages: list[Message]
    stream: bool | None = None
    stream_options: StreamOptions | UnsetType | None = UNSET
    temperature: float | UnsetType | None = UNSET
    top_p: float | UnsetType | None = UNSET
    top_k: int | UnsetType | None = UNSET
    n: int | UnsetType | None = UNSET
    stop: Stop | UnsetType = UNSET
    max_tokens: int | UnsetType | None = UNSET
    max_completion_tokens: int | UnsetType | None = UNSET
    presence_penalty: float | UnsetType | None = UNSET
    frequency_penalty: float | UnsetType | None = UNSET
    logit_bias: dict[str, float] | UnsetType | None = UNSET
    logprobs: bool | UnsetType | None = UNSET
    top_logprobs: int | UnsetType | None = UNSET
    seed: int | UnsetType | None = UNSET
    user: str | UnsetType = UNSET
    metadata: dict[str, str] | UnsetType | None = UNSET
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType | None = UNSET
    response_format: ResponseFormat | UnsetType = UNSET
    extras: Extras = field(default_factory=dict, name="$extras")

    @property
    def include_usage(self) -> bool:
        options = self.stream_options
        return isinstance(options, StreamOptions) and bool(options.include_usage)


class TopLogprob(Base):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(Base):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = field(default_factory=list)


class ChoiceLogprobs(Base):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class ResponseMessage(Base):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | UnsetType = UNSET
    annotations: list[Any] | UnsetType = UNSET


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class Choice(Base):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(Base):
    id: str
    created: int
    model: str
    choices: list[Choice]
    object: Literal["chat.completion"] = "chat.completion"
    usage: Usage | UnsetType = UNSET
    system_fingerprint: str | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET


class FunctionCallDelta(Base):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class ToolCallDelta(Base):
    index: int
    id: str | UnsetType = UNSET
    type: Literal["function"] | UnsetType = UNSET
    function: FunctionCallDelta | UnsetType = UNSET


class Delta(Base):
    role: Literal["assistant"] | UnsetType = UNSET
    content: str | UnsetType | None = UNSET
    refusal: str | UnsetType | None = UNSET
    tool_calls: list[ToolCallDelta] | UnsetType = UNSET


class ChunkChoice(Base):
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | UnsetType | None = UNSET


class ChatChunk(Base):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    usage: Usage | UnsetType | None = UNSET
    system_fingerprint: str | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET
