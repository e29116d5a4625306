"""Metrics and health over HTTP: ``/metrics`` (Prometheus text) and ``/health`` (JSON).

Served by aiohttp in the run's own event loop (no thread), from the collector of
``metrics_collector.py`` and the verdicts of ``health.py``. With several venues one
endpoint serves them all, every series and /health entry then led by a ``venue`` label.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from quantcore.config import ConfigError, MetricsConfig
from quantcore.events import BAR
from quantcore.health import health, recorders_health
from quantcore.metrics_collector import MonitoredRun, QuantcoreCollector, parts_of

log = logging.getLogger(__name__)


class MetricsServer:
    """The HTTP endpoint; :meth:`start` binds (port 0: any free port, see :attr:`port`).

    Given a run of several venues, one endpoint serves every venue.
    """

    def __init__(self, run: MonitoredRun, config: MetricsConfig) -> None:
        self.config = config
        self.parts = parts_of(run)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(QuantcoreCollector(self.parts))
        self.port = config.port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve; a busy or forbidden port is a ConfigError (exit 2)."""
        for part in self.parts:
            part.run.bus.subscribe(BAR, part.lags.observe, name="metrics")
        web_app = web.Application()
        web_app.router.add_get("/metrics", self._metrics)
        web_app.router.add_get("/health", self._health)
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            what = "is already in use" if exc.errno == errno.EADDRINUSE else f"failed: {exc}"
            raise ConfigError(
                f"metrics: listening on {self.config.host}:{self.config.port} {what}"
            ) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("metrics: %s/metrics and %s/health", self.url, self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await asyncio.shield(runner.cleanup())

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        verdicts = {
            part.name(key): verdict
            for part in self.parts
            for key, verdict in health(part.run).items()
        }
        recorders = {
            name if part.venue is None else f"{part.venue} {name}": verdict
            for part in self.parts
            for name, verdict in recorders_health(part.run.components).items()
        }
        ok = all(v.healthy for v in verdicts.values()) and all(
            v.healthy for v in recorders.values()
        )
        body = {
            "status": "ok" if ok else "unhealthy",
            "streams": {name: v.as_json() for name, v in verdicts.items()},
            "recorders": {name: v.as_json() for name, v in recorders.items()},
        }
        return web.Response(
            status=200 if ok else 503,
            text=json.dumps(body, indent=1) + "\n",
            content_type="application/json",
        )
