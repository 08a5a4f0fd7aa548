"""Limiter rules and headers, token estimates, the metrics buffer and the ledger queue."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from modelyard.config import ConfigError, parse_config
from modelyard.errors import GatewayError
from modelyard.metering.ledger import LEDGER_FILENAME, Ledger, LedgerWriter, UsageRecord
from modelyard.metering.limiter import RateLimited, RateLimiter, limit_plan, reset_text
from modelyard.metering.metrics import MetricsBuffer
from modelyard.metering.prices import PriceTable
from modelyard.metering.settings import LimitsConfig, Price
from modelyard.metering.shm_counters import ShmCounters
from modelyard.metering.tokens import chat_tokens, completion_tokens
from modelyard.schema.chat import ChatRequest, Message
from modelyard.schema.completions import CompletionRequest
from modelyard.tenancy import Principal
from prometheus_client import CollectorRegistry, Counter, Histogram

NOW = 1_800_000_030.0
ALICE = Principal("alice", "t1", frozenset({"inference"}))
BOB = Principal("bob", "t1", frozenset({"inference"}))


def _limiter(tmp_path: Path, rules: list[dict[str, object]], **extra: object) -> RateLimiter:
    plan = limit_plan(LimitsConfig.model_validate({"rules": rules, **extra}), [("mlflow-ep", 2, 60)])
    return RateLimiter(ShmCounters(tmp_path / "c.shm"), plan, clock=lambda: NOW)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.02, "20ms"), (1, "1s"), (1.45, "1.5s"), (360, "6m0s"), (3723, "1h2m3s")]
)
def test_reset_delays_are_spelled_like_openai(seconds: float, text: str) -> None:
    assert reset_text(seconds) == text


def test_rules_apply_per_scope_and_narrow_by_name(tmp_path: Path) -> None:
    limiter = _limiter(
        tmp_path,
        [
            {"scope": "key", "requests": 2, "per": "minute", "key": "alice"},
            {"scope": "tenant", "requests": 3, "per": "minute"},
        ],
    )
    for _ in range(2):
        limiter.admit(ALICE, "m", 1)
    with pytest.raises(RateLimited) as alice_out:
        limiter.admit(ALICE, "m", 1)
    assert (
        "this API key" in alice_out.value.message and alice_out.value.quota_subject == "key:t1/alice|requests"
    )
    limiter.admit(BOB, "m", 1)  # bob has no key rule, only the tenant's third call
    with pytest.raises(RateLimited) as tenant_out:
        limiter.admit(BOB, "m", 1)
    assert "this tenant" in tenant_out.value.message
    assert tenant_out.value.retry_after == 30  # the minute window ends at :00, 30 s after NOW
    assert dict(tenant_out.value.headers)["x-ratelimit-reset-requests"] == "30s"


def test_an_mlflow_endpoint_limit_covers_every_key_of_the_default_tenant(tmp_path: Path) -> None:
    limiter = _limiter(tmp_path, [])
    default_a, default_b = Principal("a", "default", frozenset()), Principal("b", "default", frozenset())
    limiter.admit(default_a, "mlflow-ep", 1)
    limiter.admit(default_b, "mlflow-ep", 1)
    with pytest.raises(RateLimited, match="the model 'mlflow-ep'"):
        limiter.admit(default_a, "mlflow-ep", 1)
    assert limiter.admit(ALICE, "mlflow-ep", 1).headers == (), (
        "another tenant's model of that name is not limited"
    )


def test_headers_report_the_tightest_budget_per_unit(tmp_path: Path) -> None:
    limiter = _limiter(
        tmp_path,
        [
            {"scope": "key", "requests": 100, "per": "day"},
            {"scope": "key", "requests": 5, "per": "minute"},
            {"scope": "key_model", "tokens": 1000, "per": "hour"},
        ],
    )
    headers = dict(limiter.admit(ALICE, "m", 40).headers)
    assert headers["x-ratelimit-limit-requests"] == "5" and headers["x-ratelimit-remaining-requests"] == "4"
    assert headers["x-ratelimit-limit-tokens"] == "1000" and headers["x-ratelimit-remaining-tokens"] == "960"


def test_token_reservations_settle_and_concurrency_slots_return(tmp_path: Path) -> None:
    limiter = _limiter(tmp_path, [{"scope": "key", "tokens": 100, "per": "hour"}], concurrent_per_key=1)
    admission = limiter.admit(ALICE, "m", 30)
    with pytest.raises(RateLimited) as busy:
        limiter.admit(ALICE, "m", 30)
    assert busy.value.code == "concurrency_limit_exceeded"
    limiter.finish(admission, 90)  # the provider reported 90 tokens: 60 more than reserved
    limiter.finish(admission, 90)  # idempotent
    headers = dict(limiter.admit(ALICE, "m", 5).headers)
    assert headers["x-ratelimit-remaining-tokens"] == "5"


def test_limit_rules_are_validated_in_the_config() -> None:
    with pytest.raises(ConfigError, match="exactly one of requests or tokens"):
        parse_config({"limits": {"rules": [{"scope": "key", "requests": 1, "tokens": 1}]}})
    with pytest.raises(ConfigError, match="model applies only"):
        parse_config({"limits": {"rules": [{"scope": "key", "requests": 1, "model": "m"}]}})


def test_token_estimates_are_byte_based() -> None:
    chat = ChatRequest(model="m", messages=[Message(role="user", content="x" * 40)])
    assert chat_tokens(chat) == 10 + 4
    assert completion_tokens(CompletionRequest(model="m", prompt=[[1, 2, 3], "abcd"])) == 3 + 1


def test_prices_cost_cached_tokens_at_their_own_rate() -> None:
    prices = PriceTable({"mine": Price(input=1.0, output=2.0, cached=0.5)})
    assert prices.cost("mine", 1_000_000, 1_000_000, 400_000) == pytest.approx(0.6 + 0.2 + 2.0)
    assert prices.cost("unknown", 10, 10, 0) == 0.0


def test_the_metrics_buffer_writes_what_direct_observation_would() -> None:
    direct_registry, buffered_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", ["m"], buckets=(1, 10), registry=direct_registry)
    buffered = Histogram("h", "h", ["m"], buckets=(1, 10), registry=buffered_registry)
    direct_count = Counter("c", "c", ["m"], registry=direct_registry)
    buffered_count = Counter("c", "c", ["m"], registry=buffered_registry)
    buffer = MetricsBuffer()
    for value in (0.5, 1, 3, 10, 11, 20):
        direct.labels("x").observe(value)
        buffer.observe(buffered, ("x",), value)
        direct_count.labels("x").inc(2)
        buffer.count(buffered_count, ("x",), 2)
    assert _samples(buffered_registry) != _samples(direct_registry)
    buffer.flush()
    assert _samples(buffered_registry) == _samples(direct_registry)


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    """Every sample but the creation times (the two registries were made at different moments)."""
    return [
        (sample.name, sample.labels, sample.value)
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    ]


def _record(i: int) -> UsageRecord:
    return UsageRecord(
        time.time(), f"r{i}", "t", "k", "m", "p", "p/m", 1, 2, 0, 1.0, None, 200, 1, 0.0, "chat"
    )


def test_a_full_ledger_queue_drops_and_counts_and_close_drains(tmp_path: Path) -> None:
    async def run() -> None:
        ledger = Ledger(
            LedgerWriter(tmp_path / LEDGER_FILENAME), queue_size=3, batch_size=10, flush_interval=0.01
        )
        kept = [ledger.record(_record(i)) for i in range(5)]
        assert kept == [True, True, True, False, False]
        ledger.start()
        await asyncio.sleep(0.1)
        for i in range(2):
            ledger.record(_record(10 + i))
        await ledger.close()

    asyncio.run(run())
    with sqlite3.connect(tmp_path / LEDGER_FILENAME) as conn:
        assert conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0] == 5
        assert conn.execute("SELECT SUM(count) FROM dropped").fetchone()[0] == 2


def test_a_rate_limited_error_is_a_gateway_error_with_its_headers() -> None:
    error = RateLimited("x", code="rate_limit_exceeded", headers=(("x-ratelimit-limit-requests", "1"),))
    assert isinstance(error, GatewayError) and error.status == 429 and error.type == "rate_limit_error"
