"""Build a worker's Meter from the config: limiter over the shared counters, ledger, metrics, log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelyard.config import GatewayConfig, expand
from modelyard.metering.ledger import LEDGER_FILENAME, Ledger, LedgerWriter
from modelyard.metering.limiter import LimitPlan, RateLimiter, limit_plan
from modelyard.metering.meter import AccessLog, Meter
from modelyard.metering.prices import PriceTable
from modelyard.metering.shm_counters import COUNTERS_FILENAME, ShmCounters
from modelyard.metering.tracing import NO_TRACING, Tracing


@dataclass(frozen=True)
class Metering:
    meter: Meter
    limiter: RateLimiter
    counters: ShmCounters
    ledger: Ledger | None


def plan_of(config: GatewayConfig) -> LimitPlan:
    model_limits = [(limit.name, limit.calls, limit.seconds) for limit in expand(config).limits]
    return limit_plan(config.limits, model_limits)


def build_metering(config: GatewayConfig, data_dir: Path, tracing: Tracing = NO_TRACING) -> Metering:
    counters = ShmCounters(data_dir / COUNTERS_FILENAME)
    limiter = RateLimiter(counters, plan_of(config))
    usage = config.usage
    ledger = (
        Ledger(LedgerWriter(data_dir / LEDGER_FILENAME), usage.queue_size, usage.batch_size)
        if usage.enabled
        else None
    )
    access_log = (
        AccessLog(content_for=frozenset(config.access_log.content_for)) if config.access_log.enabled else None
    )
    meter = Meter(
        limiter,
        ledger,
        PriceTable(usage.prices),
        metrics_on=config.metrics.enabled,
        access_log=access_log,
        tracing=tracing,
    )
    return Metering(meter, limiter, counters, ledger)
