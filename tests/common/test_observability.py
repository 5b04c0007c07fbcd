"""Logs carry trace ids; OTLP export reaches a real local HTTP receiver; pools; docs stay true."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider

from its_common.db.connect import async_pool
from its_common.logs import JsonFormatter
from its_common.settings import BaseServiceSettings, load_settings
from its_common.telemetry import context_from_traceparent, current_traceparent

REPO = Path(__file__).resolve().parents[2]


def test_json_logs_carry_the_current_trace_and_span_ids() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("svc"))
    logger = logging.getLogger("test.trace")
    logger.addHandler(handler)
    tracer = TracerProvider().get_tracer("test")
    try:
        with tracer.start_as_current_span("work") as span:
            logger.warning("inside")
            traceparent = current_traceparent()
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (line for line in stream.getvalue().splitlines())
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert f'"trace_id": "{trace_id}"' in inside
    assert "trace_id" not in outside
    assert traceparent is not None and trace_id in traceparent
    context = context_from_traceparent(traceparent)
    with tracer.start_as_current_span("child", context=context) as child:
        assert child.get_span_context().trace_id == span.get_span_context().trace_id


EXPORTING_SERVICE = textwrap.dedent(
    """
    from opentelemetry import trace
    from its_common.telemetry import setup_telemetry

    telemetry = setup_telemetry("probe", "1.2.3")
    assert telemetry.enabled
    with trace.get_tracer("probe").start_as_current_span("probe-span"):
        pass
    telemetry.shutdown()  # flushes the batch processor
    """
)


async def test_spans_are_exported_over_otlp_http_to_the_configured_endpoint() -> None:
    received: list[tuple[str, bytes]] = []

    async def collect(request: web.Request) -> web.Response:
        received.append((request.path, await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    app.router.add_post("/v1/metrics", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", EXPORTING_SERVICE, env=env, stderr=subprocess.PIPE
        )
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
    finally:
        await runner.cleanup()
    traces = [body for path, body in received if path == "/v1/traces"]
    assert traces, f"no spans received; got {[p for p, _ in received]}"
    assert b"probe-span" in traces[0] and b"probe" in traces[0] and b"1.2.3" in traces[0]


async def test_async_pool_runs_queries(database_url: str) -> None:
    settings = load_settings(BaseServiceSettings, database_url=database_url, service_name="t")
    async with async_pool(settings) as pool, pool.connection() as conn:
        cursor = await conn.execute("SELECT current_setting('application_name'), 40 + 2")
        assert await cursor.fetchone() == ("t", 42)


def test_readme_documents_every_common_setting() -> None:
    readme = (REPO / "README.md").read_text()
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", readme))
    for name, field in BaseServiceSettings.model_fields.items():
        from its_common.settings import env_names

        names = env_names(name, field)
        assert any(env in documented for env in names), f"README lacks {names[0]}"
