"""Prometheus metrics and /healthz of one ``gateway run``, served by a tiny anyio HTTP server.

``RunMetrics`` owns its own ``CollectorRegistry`` (never the process-global one), so several gateways
(tests) can run in one process. The scheduler's ``on_poll`` hook feeds it each ``PollSummary``;
``serve_metrics`` answers ``GET /metrics`` and ``GET /healthz`` inside run's task group (no thread:
prometheus_client's own ``start_http_server`` would start one).

/healthz is 503 when the last poll could not store what it read, or when nothing was stored for
``stale_intervals`` of the fleet's shortest poll interval; otherwise 200.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import anyio
from anyio.abc import SocketStream
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.config import FleetConfig, SqliteStoreConfig
from gateway.domain.poll_result import PollSummary
from gateway.polling.health import HealthStore

log = logging.getLogger("gateway.metrics")


class RunMetrics:
    def __init__(self, fleet: FleetConfig, *, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.fleet = fleet
        self._clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.polls = Counter("gateway_polls", "Polls finished, by outcome and error class",
                             ["outcome", "error"], registry=r)
        self.poll_duration = Histogram("gateway_poll_duration_seconds", "Duration of one poll (all attempts)",
                                       buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r)
        self.events_stored = Counter("gateway_events_stored", "Events appended to the store by polls", registry=r)
        self.meters_failing = Gauge("gateway_meters_failing", "Meters whose last poll failed", registry=r)
        self.meters_ok = Gauge("gateway_meters_ok", "Meters whose last poll succeeded", registry=r)
        self.meters_in_backoff = Gauge("gateway_meters_in_backoff", "Meters the scheduler is backing off",
                                       registry=r)
        self.last_store_ok = Gauge("gateway_last_store_success_timestamp_seconds",
                                   "Unix time of the last poll whose events were stored", registry=r)
        self.store_errors = Counter("gateway_store_errors", "Polls whose events could not be stored", registry=r)
        self.store_size = Gauge("gateway_store_file_bytes", "Size of the SQLite store file", registry=r)
        self.store_size.set_function(self._store_size)
        self.clock_drift = Gauge("gateway_meter_clock_drift_seconds",
                                 "Meter clock minus gateway clock at the meter's last clock read", ["meter"],
                                 registry=r)
        self.intervals_missing = Gauge("gateway_meter_intervals_missing",
                                       "Load-profile intervals not stored (behind plus gaps), from the health table",
                                       ["meter"], registry=r)
        self.writer_latency = Gauge("gateway_writer_append_latency_seconds",
                                    "Store round trip of the batched writer's appends (recent samples)",
                                    ["quantile"], registry=r)
        self.writer_flushes = Gauge("gateway_writer_flushes", "Flushes of the batched writer since start",
                                    registry=r)
        self.outbox_depth = Gauge("gateway_outbox_depth", "Events waiting in the outbox for Cosmos DB",
                                  registry=r)
        self.outbox_oldest_age = Gauge("gateway_outbox_oldest_age_seconds",
                                       "Age of the oldest event waiting in the outbox (0 when empty)", registry=r)
        self.sink: object | None = None  # the poller's event sink: WriterSink (SQLite) or OutboxSink (Cosmos)
        self._last: dict[str, PollSummary] = {}
        self.last_store_error: str | None = None
        self._last_stored_at = clock()  # start-up counts: a fresh gateway is not stale
        self.backoff_count = lambda: 0
        self.health_store: HealthStore | None = None
        self.last_outbox_depth: int | None = None  # as of the last scrape (Cosmos path)

    def _store_size(self) -> float:
        if isinstance(self.fleet.store, SqliteStoreConfig):
            try:
                return float(Path(self.fleet.store.path).stat().st_size)
            except OSError:
                return 0.0
        return 0.0

    def on_poll(self, summary: PollSummary) -> None:
        error = summary.first_error
        if summary.ok:
            outcome, kind = "ok", ""
        elif error is not None:
            outcome, kind = "failed", error.kind
        else:
            outcome, kind = "store_failed", "store"
        self.polls.labels(outcome=outcome, error=kind).inc()
        self.poll_duration.observe(summary.duration_s)
        self._last[summary.meter_id] = summary
        clock = summary.result.clock if summary.result is not None else None
        if clock is not None:
            self.clock_drift.labels(meter=summary.meter_id).set(clock.offset.total_seconds())
        if summary.store_error is not None:
            self.store_errors.inc()
            self.last_store_error = summary.store_error
        elif summary.stored or summary.already_stored or summary.ok:
            self.last_store_error = None
            self._last_stored_at = self._clock()
            self.last_store_ok.set_to_current_time()
            self.events_stored.inc(sum(summary.stored.values()))
        ok = sum(1 for s in self._last.values() if s.ok)
        self.meters_ok.set(ok)
        self.meters_failing.set(len(self._last) - ok)
        self.meters_in_backoff.set(self.backoff_count())

    async def refresh(self) -> None:
        """Before a scrape: what is read from storage rather than pushed by polls."""
        writer = getattr(self.sink, "writer", None)
        if writer is not None:
            self.writer_flushes.set(writer.metrics.flushes)
            for q in (50, 99):
                ms = writer.metrics.latency_percentile_ms(q)
                if ms is not None:
                    self.writer_latency.labels(quantile=str(q / 100)).set(ms / 1000)
        outbox = getattr(self.sink, "outbox", None)
        if outbox is not None:
            try:
                state = await outbox.state()
            except Exception as exc:  # noqa: BLE001 - a scrape must answer even if the outbox cannot
                log.warning("metrics: cannot read the outbox state: %s", exc)
            else:
                self.outbox_depth.set(state.depth)
                self.last_outbox_depth = state.depth
                self.outbox_oldest_age.set(state.oldest_age_s or 0.0)
        if self.health_store is None:
            return
        try:
            table = await self.health_store.all()
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even if the health table cannot
            log.warning("metrics: cannot read the health table: %s", exc)
            return
        for meter_id, health in table.items():
            self.intervals_missing.labels(meter=meter_id).set(health.intervals_missing)

    def status_line(self) -> str:
        ok = sum(1 for s in self._last.values() if s.ok)
        line = f"{ok} meters ok, {len(self._last) - ok} failed, {len(self.fleet.meters)} configured"
        return line if self.last_outbox_depth is None else f"{line}, outbox {self.last_outbox_depth} events"

    def health(self) -> tuple[bool, str]:
        if self.last_store_error is not None:
            return False, f"store failing: {self.last_store_error}"
        sch = self.fleet.schedules
        intervals = [s.interval_s for s in (sch.registers, sch.load_profile, sch.clock_check, sch.event_log)
                     if getattr(s, "enabled", True)]
        shortest = min(intervals, default=None)
        if shortest is not None:
            quiet = self._clock() - self._last_stored_at
            if quiet > self.fleet.metrics.stale_intervals * shortest:
                return False, f"nothing stored for {quiet:.0f} s"
        return True, "ok"


async def refresh_outbox_state(metrics: RunMetrics, period_s: float = 15.0) -> None:
    """Cosmos path: keep the outbox depth of STATUS= (systemctl status) current between scrapes."""
    if getattr(metrics.sink, "outbox", None) is None:
        return
    while True:
        await metrics.refresh()
        await anyio.sleep(period_s)


async def serve_metrics(metrics: RunMetrics, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
    """Listen on ``[metrics]`` address:port until cancelled; ``task_status`` gets the bound port."""
    cfg = metrics.fleet.metrics
    listener = await anyio.create_tcp_listener(local_host=cfg.address, local_port=cfg.port)
    async with listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        log.info("metrics on http://%s:%d/metrics", cfg.address, port)
        task_status.started(port)
        await listener.serve(lambda stream: _answer(metrics, stream))


async def _answer(metrics: RunMetrics, stream: SocketStream) -> None:
    async with stream:
        try:
            with anyio.fail_after(5):
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 8192:
                    request += await stream.receive()
        except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return
        parts = request.split(b"\r\n", 1)[0].split()
        path = parts[1].decode(errors="replace").split("?")[0] if len(parts) >= 2 else ""
        if path == "/metrics":
            await metrics.refresh()
            status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(metrics.registry)
        elif path == "/healthz":
            healthy, why = metrics.health()
            status = "200 OK" if healthy else "503 Service Unavailable"
            ctype, body = "text/plain; charset=utf-8", (why + "\n").encode()
        else:
            status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
        head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        try:
            await stream.send(head.encode() + body)
        except (anyio.BrokenResourceError, OSError):
            pass
