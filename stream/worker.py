"""Entry point of the worker role (``ecrm worker``)."""

from __future__ import annotations

import logging

import faust
from prometheus_client import start_http_server

from core.metrics import WORKER_REGISTRY
from core.settings import Settings
from stream.agents import register_agents
from stream.analytics_timer import register_analytics
from stream.app import create_app
from stream.heartbeat import register_heartbeat
from stream.lag import register_lag_check
from stream.retrain import register_retraining


def build(settings: Settings) -> faust.App:
    app = create_app(settings)
    register_agents(app, settings)
    register_analytics(app, settings)
    register_retraining(app, settings)
    register_lag_check(app, settings)
    register_heartbeat(app, settings)
    return app


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Run a Faust worker until stopped (SIGINT/SIGTERM). Exposes Prometheus metrics on 127.0.0.1."""
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host, registry=WORKER_REGISTRY)
    app = build(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
