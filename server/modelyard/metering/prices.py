"""What a request cost: US dollars per million tokens, by upstream model id.

The built-in table holds list prices of a few common models (an estimate, not an invoice); the
config's `usage.prices` overrides and extends it. A model without a price costs 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from modelyard.metering.settings import Price

DEFAULT_PRICES: Mapping[str, Price] = MappingProxyType(
    {
        "gpt-4o": Price(input=2.5, output=10.0, cached=1.25),
        "gpt-4o-mini": Price(input=0.15, output=0.6, cached=0.075),
        "gpt-4.1": Price(input=2.0, output=8.0, cached=0.5),
        "gpt-4.1-mini": Price(input=0.4, output=1.6, cached=0.1),
        "text-embedding-3-small": Price(input=0.02, output=0.0),
        "text-embedding-3-large": Price(input=0.13, output=0.0),
        "claude-sonnet-4-5": Price(input=3.0, output=15.0, cached=0.3),
        "claude-3-5-haiku-latest": Price(input=0.8, output=4.0, cached=0.08),
    }
)


class PriceTable:
    def __init__(self, overrides: Mapping[str, Price]) -> None:
        self._prices = {**DEFAULT_PRICES, **overrides}

    def cost(self, model_id: str, prompt: int, completion: int, cached: int) -> float:
        price = self._prices.get(model_id)
        if price is None:
            return 0.0
        cached_price = price.cached if price.cached is not None else price.input
        fresh = max(prompt - cached, 0)
        return (fresh * price.input + cached * cached_price + completion * price.output) / 1_000_000
