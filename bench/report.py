"""The markdown table: one row per measure, one column per target, direct first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Result = dict[str, Any]
Getter = Callable[[Result], Any]

# How a gateway cell is compared with the direct cell of the same row.
RATIO, DELTA, PLAIN = "ratio", "delta", "plain"


def _level(result: Result, connections: str, key: str) -> Any:
    return result.get("levels", {}).get(connections, {}).get(key)


def _at(connections: str, key: str) -> Getter:
    return lambda result: _level(result, connections, key)


def _top_level(result: Result) -> Result:
    levels = result.get("levels", {})
    return levels[max(levels, key=int)] if levels else {}


def _errors(result: Result) -> Any:
    levels = result.get("levels", {})
    return sum(level["errors"] for level in levels.values()) if levels else None


def _stream_check(result: Result) -> Any:
    stream = result.get("stream")
    if not stream:
        return None
    text = f"{stream['ok']}/{stream['requests']} ok, min {stream['chunks_min']} chunks"
    if stream["missing_done"]:
        text += f", {stream['missing_done']} without [DONE]"
    if stream["bad_status"]:
        text += f", status {stream['bad_status']}"
    return text


def _cpu_split(result: Result) -> Any:
    roles = _top_level(result).get("cpu", {}).get("gateway_ms_per_req_by_role", {})
    return " / ".join(f"{role} {value:.2f}" for role, value in roles.items()) or None


def _core_split(result: Result) -> Any:
    pct = _top_level(result).get("cpu", {}).get("pct_of_core")
    return None if not pct else "/".join(f"{pct[k]:.0f}" for k in ("gateway", "upstream", "client", "other"))


def _grpc(key: str) -> Getter:
    def get(result: Result) -> Any:
        grpc = result.get("grpc") or {}
        if key == "errors":
            return sum(grpc["errors"].values()) if "errors" in grpc else grpc.get("error")
        if key == "cpu":
            return grpc.get("cpu", {}).get("gateway_ms_per_req")
        return grpc.get(key)

    return get


def rows(results: Result) -> list[tuple[str, Getter, str]]:
    """(row label, value getter, comparison kind)."""
    direct = results["targets"].get("direct", {})
    levels = list(direct.get("levels", {})) or ["1", "16", "64"]
    top = max(levels, key=int)
    table: list[tuple[str, Getter, str]] = []
    for c in levels:
        table += [
            (f"chat RPS @c{c}", _at(c, "rps"), RATIO),
            (f"chat p50 ms @c{c}", _at(c, "p50_ms"), DELTA),
            (f"chat p99 ms @c{c}", _at(c, "p99_ms"), DELTA),
        ]
    table += [
        ("errors (non-2xx + socket, all levels)", _errors, PLAIN),
        ("stream TTFC p50 ms", lambda r: (r.get("stream") or {}).get("ttfc_ms_p50"), DELTA),
        ("stream total p50 ms", lambda r: (r.get("stream") or {}).get("total_ms_p50"), DELTA),
        ("stream check", _stream_check, PLAIN),
        (
            f"CPU ms/req @c{top} (process tree)",
            lambda r: _top_level(r).get("cpu", {}).get("gateway_ms_per_req"),
            DELTA,
        ),
        (f"CPU ms/req @c{top} by process", _cpu_split, PLAIN),
        (f"CPU % of a core @c{top}: target/upstream/client/other", _core_split, PLAIN),
        ("RSS MB (peak, whole session)", lambda r: r.get("rss_mb_peak"), PLAIN),
        ("processes", lambda r: r.get("max_procs"), PLAIN),
    ]
    grpc_c = results.get("meta", {}).get("settings", {}).get("grpc_concurrency", "N")
    table += [
        (f"gRPC CreateChatCompletion RPS @c{grpc_c}", _grpc("rps"), PLAIN),
        ("gRPC p50 / p99 ms", lambda r: _pair(_grpc("p50_ms")(r), _grpc("p99_ms")(r)), PLAIN),
        ("gRPC errors", _grpc("errors"), PLAIN),
        ("gRPC gateway CPU ms/req", _grpc("cpu"), PLAIN),
    ]
    return table


def _pair(first: Any, second: Any) -> Any:
    return None if first is None else f"{_number(first)} / {_number(second)}"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def cell(value: Any, base: Any, kind: str) -> str:
    if value is None:
        return "—"
    text = _number(value)
    if not isinstance(value, (int, float)) or not isinstance(base, (int, float)):
        return text
    if kind == RATIO and base:
        return f"{text} ({value / base:.2f}x)"
    if kind == DELTA:
        return f"{text} ({value - base:+.2f})"
    return text


def markdown(results: Result) -> str:
    targets: list[Result] = list(results["targets"].values())
    direct = results["targets"].get("direct", {})
    lines = [
        "| measure | " + " | ".join(t["name"] for t in targets) + " |",
        "| --- |" + " --- |" * len(targets),
    ]
    for title, get, kind in rows(results):
        base = get(direct) if direct else None
        cells = [
            cell(get(t), base, kind if t is not direct else PLAIN) if "error" not in t else "FAILED"
            for t in targets
        ]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    notes = [f"- {t['name']}: FAILED: {t['error'].splitlines()[0]}" for t in targets if "error" in t]
    legend = (
        "(x) = gateway / direct; (+) = gateway minus direct. direct = the fake upstream alone; "
        "its CPU and RSS rows are the fake's own."
    )
    return "\n".join([*lines, "", legend, *notes]) + "\n"
