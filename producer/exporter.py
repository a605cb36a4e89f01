"""``ascent exporter``: run-level Prometheus metrics over HTTP, read from the store and the broker at
each scrape (nothing is kept between scrapes):

    ascent_run_items{run,kind,state}      items of a run by state: done, failed, cancelled, skipped, pending
    ascent_run_fooled{run}                items whose record says fooled (runs whose records have it)
    ascent_images_per_second{run}         images run (done or failed, not skipped or cancelled) per second
                                          since the run's first shard started
    ascent_queue_messages{queue}          the Redis list length of a queue: what KEDA-like autoscalers read
    ascent_workers{state}                 Celery workers that answer: online, busy (running a task), idle

``/metrics`` needs HTTP basic auth when it is configured (``--basic-auth`` or, as for Flower,
``ASCENT_FLOWER_BASIC_AUTH``), and is never served unauthenticated on a non-loopback address;
``/healthcheck`` answers without auth.
"""

from __future__ import annotations

import base64
import hmac
import logging
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ascent.producer.flower import serving_auth
from ascent.producer.runs import list_runs
from ascent.shared.errors import AscentError, InvalidInput, StoreError, TransientError
from ascent.shared.queue import DEFAULT_QUEUE, create_app
from ascent.shared.settings import Settings, redact_url
from ascent.shared.store import Store

log = logging.getLogger(__name__)
MAX_RUNS = 50  # the newest runs of the store get metrics; older ones are history
STATES = ("done", "failed", "cancelled", "skipped", "pending")


class AscentCollector:
    """A prometheus_client collector: each ``collect()`` reads the store and asks the broker."""

    def __init__(self, store: Store, settings: Settings, queues: Sequence[str], max_runs: int = MAX_RUNS) -> None:
        self.store, self.settings, self.queues, self.max_runs = store, settings, tuple(queues), max_runs

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        items = GaugeMetricFamily("ascent_run_items", "Items of a run by state", labels=["run", "kind", "state"])
        fooled = GaugeMetricFamily("ascent_run_fooled", "Items of a run recorded as fooled", labels=["run"])
        rate = GaugeMetricFamily("ascent_images_per_second", "Items through per second of a run", labels=["run"])
        now = time.time()
        records: dict[str, list[dict[str, Any]]] = {}
        for row in list_runs(self.store, limit=self.max_runs, records=records):
            p = row.progress
            for state, n in zip(STATES, (p.done, p.failed, p.cancelled, p.skipped, p.pending), strict=True):
                items.add_metric([row.run_id, row.kind, state], n)
            flags = [r["fooled"] for r in records.get(row.run_id, []) if isinstance(r.get("fooled"), bool)]
            if flags:
                fooled.add_metric([row.run_id], sum(flags))
            if p.started_at is not None:
                end = now if not p.complete else max([w.last_seen for w in p.fleet] or [now])
                if end > p.started_at:
                    rate.add_metric([row.run_id], p.processed / (end - p.started_at))
        yield from (items, fooled, rate)
        yield from self._broker()

    def _broker(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        if not self.settings.broker_url:
            return
        queue = GaugeMetricFamily("ascent_queue_messages", "Messages waiting in a queue", labels=["queue"])
        workers = GaugeMetricFamily("ascent_workers", "Celery workers by state", labels=["state"])
        try:
            import redis

            client = redis.Redis.from_url(self.settings.broker_url, socket_timeout=5)
            try:
                for name in self.queues:
                    queue.add_metric([name], int(client.llen(name)))
            finally:
                client.close()
            active = self._active()
        except Exception as exc:  # the broker is down: say so in the log, keep serving the store's metrics
            log.warning("broker %s: %s", redact_url(self.settings.broker_url), exc)
            return
        busy = sum(bool(tasks) for tasks in active.values())
        for state, n in (("online", len(active)), ("busy", busy), ("idle", len(active) - busy)):
            workers.add_metric([state], n)
        yield from (queue, workers)

    def _active(self) -> dict[str, list[Any]]:
        app = create_app(self.settings)
        try:
            return app.control.inspect(timeout=1.0).active() or {}
        finally:
            app.close()


def _handler(registry: Any, auth: str | None) -> type[BaseHTTPRequestHandler]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    allowed = [f"Basic {base64.b64encode(pair.encode()).decode()}" for pair in (auth or "").split(",") if pair]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/healthcheck":
                return self._send(200, b"OK", "text/plain")
            if self.path.split("?")[0] != "/metrics":
                return self._send(404, b"not found: the metrics are at /metrics", "text/plain")
            given = self.headers.get("Authorization", "")
            if allowed and not any(hmac.compare_digest(given, a) for a in allowed):
                return self._send(401, b"authentication required", "text/plain", challenge=True)
            try:
                body = generate_latest(registry)
            except (StoreError, TransientError, InvalidInput) as exc:
                return self._send(503, f"the store cannot be read: {exc}".encode(), "text/plain")
            self._send(200, body, CONTENT_TYPE_LATEST)

        def _send(self, code: int, body: bytes, content_type: str, challenge: bool = False) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if challenge:
                self.send_header("WWW-Authenticate", 'Basic realm="ascent"')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return Handler


def serve(settings: Settings, address: str, port: int, basic_auth: str | None, queues: str | None) -> None:
    """Serve the metrics until interrupted."""
    from prometheus_client import CollectorRegistry

    auth = serving_auth(settings, address, basic_auth, "metrics")
    names = [q.strip() for q in (queues or DEFAULT_QUEUE).split(",") if q.strip()]
    registry = CollectorRegistry()
    registry.register(AscentCollector(settings.open_store(), settings, names))
    try:
        server = ThreadingHTTPServer((address, port), _handler(registry, auth))
    except OSError as exc:
        raise AscentError(f"the exporter cannot listen on {address}:{port}: {exc.strerror or exc}") from None
    broker = redact_url(settings.broker_url) if settings.broker_url else "no broker"
    print(
        f"ascent exporter on http://{address}:{port}/metrics for {settings.store} and {broker} "
        f"({'basic auth' if auth else 'no auth'})",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
