"""report.html in headless Chromium: it must render with no console error and no missing resource.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: the browser
reads commands from fd 3 and writes replies to fd 4, NUL-separated JSON), so the test needs only the
standard library and never opens a network port. Debian's ``chromium`` package provides the browser;
without it the test is skipped, unless VESSELSEG_REQUIRE_CHROMIUM=1 (CI) makes that a failure.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_visualize_build import PipelineRun, build, pipeline_run  # noqa: F401  (session fixture)

SCREEN_WIDTH = 1280
MAX_SCREENSHOT_HEIGHT = 16000
IMAGES_NOT_LOADED = (
    "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 120))"
)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("VESSELSEG_REQUIRE_CHROMIUM") == "1":
        pytest.fail("chromium is required (VESSELSEG_REQUIRE_CHROMIUM=1): apt-get install -y chromium")
    pytest.skip("chromium not installed (apt-get install -y chromium)")


@dataclass
class PageLoad:
    errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    height: int = 0


class DevTools:
    """A minimal DevTools-protocol client over the pipe Chromium opens with --remote-debugging-pipe."""

    def __init__(self, browser: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds() -> None:  # in the child, before exec: its fd 3 reads commands, fd 4 writes replies
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.process = subprocess.Popen(
            [
                browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=wire_fds,
            pass_fds=(3, 4),
        )  # fmt: skip
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> None:
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._receive(timeout))

    def _receive(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError(f"no DevTools message from Chromium within {timeout} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited: {self.process.stderr.read().decode(errors='replace')[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self.process.stderr.close()


def load_page(url: str) -> PageLoad:
    """Open ``url``, wait for it to load, collect every console error and failed load, screenshot it whole."""
    with tempfile.TemporaryDirectory(prefix="vesselseg-chromium-") as profile:
        tools = DevTools(chromium(), Path(profile))
        try:
            target = tools.call("Target.createTarget", url="about:blank")["targetId"]
            session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Runtime", "Log", "Network", "Page"):
                tools.call(f"{domain}.enable", session)
            tools.call(
                "Emulation.setDeviceMetricsOverride",
                session,
                width=SCREEN_WIDTH,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            tools.call("Page.navigate", session, url=url)
            tools.wait_for("Page.loadEventFired")
            height = int(tools.call("Page.getLayoutMetrics", session)["cssContentSize"]["height"])
            # A viewport as tall as the page, so that everything is laid out, decoded and in the picture.
            tools.call(
                "Emulation.setDeviceMetricsOverride",
                session,
                width=SCREEN_WIDTH,
                height=min(height, MAX_SCREENSHOT_HEIGHT),
                deviceScaleFactor=1,
                mobile=False,
            )
            broken = tools.call("Runtime.evaluate", session, expression=IMAGES_NOT_LOADED, returnByValue=True)
            shot = tools.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True, timeout=60)
            load = PageLoad(screenshot=base64.b64decode(shot["data"]), height=height)
            load.errors += [f"image not loaded: {src}" for src in broken["result"]["value"]]
            load.errors += _errors(tools.events)
            return load
        finally:
            tools.close()


def _errors(events: list[dict[str, Any]]) -> list[str]:
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            found.append(f"uncaught: {params['exceptionDetails'].get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(f"console.{params['type']}: {[a.get('value') for a in params.get('args', [])]}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            found.append(f"failed to load: {params.get('errorText')} ({params.get('type')})")
        elif method == "Network.responseReceived" and params["response"].get("status", 200) >= 400:
            found.append(f"HTTP {params['response']['status']}: {params['response']['url']}")
    return found


def test_the_harness_sees_console_errors_and_missing_images(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        '<!doctype html><html><head><link rel="icon" href="data:,"></head><body>'
        '<img src="missing.png" alt="x"><script>console.error("boom")</script></body></html>'
    )
    load = load_page(page.as_uri())
    assert any("console.error" in e and "boom" in e for e in load.errors), load.errors
    assert any("missing.png" in e for e in load.errors), load.errors


@pytest.mark.parametrize("embed", [True, False], ids=["embedded", "files-beside"])
def test_report_renders_cleanly_in_chromium(pipeline_run: PipelineRun, tmp_path: Path, embed: bool) -> None:
    out = tmp_path / "report"
    result = build(pipeline_run, out, embed_images=embed)
    if not embed:  # only the folder may hold the images: a copy elsewhere must break them, visibly
        moved = tmp_path / "moved.html"
        shutil.copy(result.html, moved)
        assert any("image not loaded" in e for e in load_page(moved.as_uri()).errors)
    load = load_page(result.html.as_uri())
    assert load.errors == []
    assert load.height > 3000  # every section laid out, not an empty or collapsed page
    screenshot = out / "screenshot.png"
    screenshot.write_bytes(load.screenshot)
    assert load.screenshot.startswith(b"\x89PNG")
