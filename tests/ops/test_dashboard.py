"""The dashboard in a real headless Chromium (Debian's), driven by Playwright.

It loads, shows a function the test just created, and its queued count follows the
jobs the test submits; screenshots are kept under test-artifacts/ (laptop and phone).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gearshift.protocol.codec import encode_request
from gearshift.protocol.packets import PacketType as T
from gearshift.testing import ServerThread
from tests.ops.conftest import RawWorker, admin, reverse

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

playwright_sync = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="needs Debian's chromium"),
]


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(http=True, http_port=0) as srv:
        yield srv


def submit_background(port: int, function: bytes, count: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        for i in range(count):
            s.sendall(encode_request(T.SUBMIT_JOB_BG, function, b"", b"job %d" % i))
            assert s.recv(4096).startswith(b"\0RES")


def test_dashboard_live_in_chromium(server: ServerThread) -> None:
    assert server.server is not None
    url = f"http://127.0.0.1:{server.server.http_addresses[0][1]}/"
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            expect = playwright_sync.expect
            expect(page.locator("#conn")).to_have_text("live", timeout=20_000)

            assert admin(server.port, "create function dash.f").startswith("OK")
            row = page.locator('#functions tr[data-function="dash.f"]')
            expect(row).to_be_visible(timeout=20_000)
            expect(row.locator("td.queued")).to_have_text("0", timeout=20_000)

            submit_background(server.port, b"dash.f", 3)
            expect(row.locator("td.queued")).to_have_text("3", timeout=20_000)
            expect(page.locator("#t-queued")).to_have_text("3", timeout=20_000)
            expect(page.locator("#t-workers")).to_have_text("0", timeout=20_000)
            expect(page.locator("#jobs tbody tr[data-handle]")).to_have_count(3, timeout=20_000)

            submit_background(server.port, b"dash.f", 2)
            expect(row.locator("td.queued")).to_have_text("5", timeout=20_000)

            # Cancel one job from the page (loopback is authorised): it turns "ignored".
            first = page.locator("#jobs tbody tr[data-handle]").first
            handle = first.get_attribute("data-handle")
            first.get_by_role("button", name="cancel").click()
            expect(page.locator("#message")).to_have_text(f"cancelled {handle}", timeout=20_000)
            cancelled = page.locator(f'#jobs tbody tr[data-handle="{handle}"] td.state-ignored')
            expect(cancelled).to_be_visible(timeout=20_000)
            page.screenshot(path=str(ARTIFACTS / "dashboard-queued.png"), full_page=True)

            # A worker drains the queue: it shows up, and queued falls back to 0.
            worker = RawWorker(server.port, {"dash.f": reverse})
            try:
                expect(row.locator("td.queued")).to_have_text("0", timeout=20_000)
                expect(page.locator("#workers tbody tr")).to_have_count(1, timeout=20_000)
                expect(page.locator("#t-workers")).to_have_text("1", timeout=20_000)
                expect(page.locator("#workers tbody")).to_contain_text("dash.f")
                # Give the throughput chart a few frames to draw.
                page.wait_for_timeout(2500)
                page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            finally:
                worker.close()

            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            phone.goto(url)
            expect(phone.locator('#functions tr[data-function="dash.f"]')).to_be_visible(
                timeout=20_000
            )
            # Readable on a phone: the page itself never scrolls sideways.
            overflow = phone.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0
            phone.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
