"""The page in Debian's Chromium (Playwright): no console errors, live panels, kill switch token,
and the README's screenshot (docs/dashboard.png)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    async_playwright,
    expect,
)
from psycopg.types.json import Jsonb

from .conftest import TOKEN, Stack, seed

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
# A test run does not rewrite tracked files: ITS_UPDATE_SCREENSHOT=1 refreshes the README's.


@pytest.fixture(scope="package")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


async def open_page(browser: Browser, stack: Stack) -> tuple[Page, list[str]]:
    page = await browser.new_page(viewport={"width": 1440, "height": 2000})
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))

    def on_request(request: Request) -> None:
        if not request.url.startswith(("data:", stack.url)):
            problems.append(f"external request: {request.url}")  # the page must work offline

    page.on("request", on_request)
    await page.goto(stack.url + "/")
    return page, problems


async def test_page_shows_live_data_without_console_errors(
    browser: Browser, stack: Stack, tmp_path: Path
):
    await stack.reset()
    await seed(stack)
    page, problems = await open_page(browser, stack)
    await page.wait_for_selector("#connection.good", timeout=10_000)
    panels = ("candles", "portfolio", "fills", "orders", "decisions", "prices", "alerts",
              "health", "router", "redis", "loader", "feed", "features", "acceptance")  # fmt: skip
    for name in panels:
        await page.wait_for_selector(f"#panel-{name}[data-status=ok]", timeout=10_000)
    assert await page.locator("#panel-candles canvas").count() >= 2  # both symbols drawn
    assert await page.locator("#panel-candles [data-bars='60']").count() == 2
    assert await page.locator("#panel-health .card[data-service=router]").count() == 1
    assert "SELL" in await page.locator("#panel-fills").inner_text()
    assert "pass" in await page.locator("#panel-acceptance").inner_text()
    # The older demo decision's row carries the badge; the latest model is not a demo.
    demo_row = page.locator("#panel-decisions tbody tr", has_text="BUY_BOTH")
    await expect(demo_row.locator(".badge.demo")).to_have_text("demo model")
    assert await page.locator("#panel-decisions tbody .badge.demo").count() == 1
    await expect(page.locator("#model-badge")).to_be_hidden()

    before = await page.locator("#updated").get_attribute("data-ts")
    await stack.redis.hset("its:feed:state", mapping={"state": "stale", "detail": "quiet feed"})
    await expect(page.locator("#panel-feed")).to_contain_text("quiet feed", timeout=5_000)
    assert await page.locator("#updated").get_attribute("data-ts") != before
    await stack.redis.hset("its:feed:state", mapping={"state": "subscribed", "detail": ""})
    await expect(page.locator("#panel-feed")).not_to_contain_text("quiet feed", timeout=5_000)
    await asyncio.sleep(0.5)
    shot = README_SCREENSHOT if os.environ.get("ITS_UPDATE_SCREENSHOT") else tmp_path / "d.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    assert problems == []
    await page.close()


async def test_a_demo_model_is_labelled_in_the_header_and_the_decisions_panel(
    browser: Browser, stack: Stack
):
    await stack.reset()
    await seed(stack)
    page, problems = await open_page(browser, stack)
    await page.wait_for_selector("#panel-decisions[data-status=ok]", timeout=10_000)
    await expect(page.locator("#model-badge")).to_be_hidden()
    with psycopg.connect(stack.db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO signals (ts, model_version, action, action_name, confidence, features)"
            " VALUES (now(), 'demo', 4, 'HOLD_BOTH', 0.9, %s)",
            (Jsonb({"demo": True}),),
        )
    await expect(page.locator("#model-badge")).to_be_visible(timeout=5_000)
    await expect(page.locator("#model-badge")).to_have_text("demo model")
    latest = page.locator("#panel-decisions p.model")
    await expect(latest).to_contain_text("model demo")
    await expect(latest.locator(".badge.demo")).to_be_visible()
    assert await page.locator("#panel-decisions tbody .badge.demo").count() == 2
    assert problems == []
    await page.close()


async def test_empty_panels_say_no_data_yet(browser: Browser, stack: Stack):
    await stack.reset()
    page, problems = await open_page(browser, stack)
    await page.wait_for_selector("#connection.good", timeout=10_000)
    await page.wait_for_selector("#panel-orders[data-status=no_data]", timeout=10_000)
    assert "no data yet" in await page.locator("#panel-orders").inner_text()
    assert await page.locator("#panel-candles[data-status=no_data]").count() == 1
    assert await page.locator("[data-status=error]").count() == 0
    assert problems == []
    await page.close()


async def test_kill_switch_needs_the_token(browser: Browser, stack: Stack):
    await stack.reset()
    page, problems = await open_page(browser, stack)
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.wait_for_selector("#connection.good", timeout=10_000)
    await page.click("#kill")
    await page.wait_for_selector("#control-result.bad", timeout=5_000)
    assert "token" in await page.locator("#control-result").inner_text()
    assert await stack.redis.get("its:trader:kill") is None
    # the browser reports the refused request (401) on its console: expected, and the only one
    assert len(problems) == 1 and "401" in problems[0]
    problems.clear()

    await page.fill("#token", TOKEN)
    await page.check("#flatten")
    await page.click("#kill")
    await page.wait_for_selector("#control-result.good", timeout=5_000)
    flag = json.loads(await stack.redis.get("its:trader:kill") or b"null")
    assert flag["flatten"] is True
    await expect(page.locator("#panel-trader")).to_contain_text("HALTED", timeout=5_000)
    await page.click("#resume")
    await expect(page.locator("#control-result")).to_contain_text("resumed", timeout=5_000)
    assert await stack.redis.get("its:trader:kill") is None
    await expect(page.locator("#panel-trader")).not_to_contain_text("HALTED", timeout=5_000)
    assert problems == []
    await page.close()
