"""The MLflow AI Gateway config shapes: `endpoints` and `routes`, accepted as MLflow writes them.

```yaml
endpoints:
  - name: chat1
    endpoint_type: llm/v1/chat
    model: {provider: openai, name: gpt-4o, config: {openai_api_key: $OPENAI_API_KEY, temperature: 0.7}}
    limit: {renewal_period: minute, calls: 100}
routes:
  - name: chat-route
    task_type: llm/v1/chat
    destinations: [{name: chat1, traffic_percentage: 80}, {name: chat2, traffic_percentage: 20}]
    routing_strategy: TRAFFIC_SPLIT
```
"""

from __future__ import annotations

from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from modelyard.dialects.external import TASKS, DialectError, Task, Translated, serves, translate

EndpointType = Literal["llm/v1/chat", "llm/v1/completions", "llm/v1/embeddings"]
ENDPOINT_PROVIDER_PREFIX = "endpoint:"
ROUTE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-/:]{0,127}$"
ENDPOINT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-/:]{0,118}$"
"""As provider names, less the room `endpoint:` takes in the generated provider's name."""
RENEWAL_SECONDS = MappingProxyType({"second": 1, "minute": 60, "hour": 3600, "day": 86400})


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MlflowModel(_Strict):
    provider: str
    name: str = Field(min_length=1, max_length=256)
    config: dict[str, Any] = Field(default_factory=dict)
    """The provider's keys (`openai_api_key`, `aws_config`, …) and default request parameters."""

    @field_validator("config")
    @classmethod
    def _translatable(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        provider = info.data.get("provider")
        if isinstance(provider, str):
            try:
                translate(provider, value, resolved=True)
            except DialectError as exc:
                raise ValueError(str(exc)) from None
        return value

    @cached_property
    def translated(self) -> Translated:
        return translate(self.provider, self.config, resolved=True)


class MlflowLimit(_Strict):
    renewal_period: Literal["second", "minute", "hour", "day"]
    calls: int = Field(ge=1)

    @property
    def seconds(self) -> int:
        return RENEWAL_SECONDS[self.renewal_period]


class MlflowEndpoint(_Strict):
    name: str = Field(pattern=ENDPOINT_NAME_PATTERN)
    endpoint_type: EndpointType
    model: MlflowModel
    limit: MlflowLimit | None = None

    @model_validator(mode="after")
    def _provider_serves_the_task(self) -> MlflowEndpoint:
        type_name = self.model.translated.type_name
        if not serves(type_name, self.task):
            raise ValueError(
                f"endpoint {self.name!r}: the {self.model.provider} provider does not serve {self.endpoint_type}"
            )
        return self

    @property
    def task(self) -> Task:
        return TASKS[self.endpoint_type]

    @property
    def provider_name(self) -> str:
        """The name of the provider generated for this endpoint."""
        return f"{ENDPOINT_PROVIDER_PREFIX}{self.name}"


class MlflowDestination(_Strict):
    name: str
    traffic_percentage: int = Field(ge=0, le=100)


class MlflowRoute(_Strict):
    """A traffic split over endpoints or model aliases."""

    name: str = Field(pattern=ROUTE_NAME_PATTERN)
    task_type: EndpointType
    destinations: list[MlflowDestination] = Field(min_length=1)
    routing_strategy: Literal["TRAFFIC_SPLIT"] = "TRAFFIC_SPLIT"

    @model_validator(mode="after")
    def _sums_to_100(self) -> MlflowRoute:
        total = sum(d.traffic_percentage for d in self.destinations)
        if total != 100:
            raise ValueError(f"route {self.name!r}: traffic percentages sum to {total}, not 100")
        seen: dict[str, int] = {}
        for index, destination in enumerate(self.destinations):
            if destination.name in seen:
                raise ValueError(
                    f"route {self.name!r}: destinations[{index}] repeats {destination.name!r} "
                    f"(destinations[{seen[destination.name]}])"
                )
            seen[destination.name] = index
        return self

    @property
    def task(self) -> Task:
        return TASKS[self.task_type]
