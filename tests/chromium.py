"""Headless Chromium for the tests of the offline pages, driven over the DevTools protocol through
--remote-debugging-pipe (JSON messages on fds 3 and 4): no Python package, no port, no browser download.

`make setup` installs Debian's chromium. Without it the browser tests fail, loudly, unless BGM_SKIP_BROWSER=1
says to skip them knowingly (a machine where nobody can install it)."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio",
         "--disable-dev-shm-usage",  # containers (CI) often have a small /dev/shm
         # nothing leaves the machine even if a page asks: names do not resolve, and any proxy use goes nowhere
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9")
LOCAL = ("file:", "data:", "about:", "blob:")


def executable() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if os.environ.get("BGM_SKIP_BROWSER") == "1":
        pytest.skip("no chromium, and BGM_SKIP_BROWSER=1 says to skip the browser tests")
    pytest.fail("no chromium on PATH: `make setup` installs Debian's chromium (apt-get, as root); "
                "set BGM_SKIP_BROWSER=1 to skip the browser tests knowingly")


class Tab:
    """One page in a fresh headless Chromium with its network switched off: every console error, uncaught
    exception, failed load and non-local request is recorded (`errors`, `requests`)."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 900, timeout: float = 60.0):
        self.profile, self.size, self.timeout = profile, (width, height), timeout
        self.errors: list[str] = []
        self.requests: list[str] = []
        self._id, self._buf, self._loaded = 0, b"", False

    def __enter__(self) -> "Tab":
        self.profile.mkdir(parents=True, exist_ok=True)
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        # fds >= 10 in the parent, so that the child's dup2 onto 3 and 4 cannot overwrite one with the other
        child_r, child_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_r, from_w))
        os.close(to_r)
        os.close(from_w)
        self._log = open(self.profile / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            [executable(), *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, close_fds=False,
            preexec_fn=lambda: (os.dup2(child_r, 3), os.dup2(child_w, 4)))
        os.close(child_r)
        os.close(child_w)
        self._out, self._in = to_w, from_r
        try:
            self._open_tab()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _open_tab(self) -> None:
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1,
                                                       "uploadThroughput": -1})
        self.call("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*"]})
        self.call("Emulation.setDeviceMetricsOverride", {"width": self.size[0], "height": self.size[1],
                                                         "deviceScaleFactor": 1, "mobile": False})

    def __exit__(self, *exc) -> None:
        try:
            self._call("Browser.close")
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._out, self._in):
            os.close(fd)
        self._log.close()

    # --- the protocol ------------------------------------------------------------------------------------
    def _call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(time.monotonic() + self.timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._event(reply)

    def call(self, method: str, params: dict | None = None) -> dict:
        return self._call(method, params, self._session)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer in {self.timeout} s (log: {self.profile}/chromium.log)")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise EOFError(f"chromium exited (log: {self.profile}/chromium.log)")
            self._buf += chunk
        message, _, self._buf = self._buf.partition(b"\0")
        return json.loads(message)

    def _event(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            self.errors.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Page.loadEventFired":
            self._loaded = True

    def pump(self, seconds: float) -> None:
        """Read events for `seconds` (they arrive between calls too)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if select.select([self._in], [], [], max(0.0, deadline - time.monotonic()))[0] or b"\0" in self._buf:
                self._event(self._read(time.monotonic() + self.timeout))

    # --- what a test does --------------------------------------------------------------------------------
    def goto(self, url: str) -> None:
        self._loaded = False
        self.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + self.timeout
        while not self._loaded:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: no load event in {self.timeout} s")
            self._event(self._read(deadline))

    def eval(self, expression: str):
        reply = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression[:80]}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        """Poll `expression` until it is truthy; its last value either way."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value or time.monotonic() > deadline:
                return value
            self.pump(0.2)

    def screenshot(self, path: Path, max_height: int = 12000) -> None:
        """The whole page (up to max_height px) as a PNG."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": self.size[0], "height": min(max_height, size["height"]), "scale": 1}
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        path.write_bytes(base64.b64decode(shot["data"]))

    def nonlocal_requests(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(LOCAL)]


MEDIA = """Array.from(document.querySelectorAll('video,audio')).map(e => ({src: e.getAttribute('src'),
  ready: e.readyState, duration: isFinite(e.duration) ? e.duration : -1, error: e.error ? e.error.code : 0,
  width: e.tagName == 'VIDEO' ? e.videoWidth : null}))"""
PLAY_VIDEOS = ("Promise.all(Array.from(document.querySelectorAll('video')).map(v => {v.muted = true; "
               "return v.play().catch(e => null);}))")  # muted: a video may play without a gesture
DECODED = ("(() => { const f = Array.from(document.querySelectorAll('video')).map(v => "
           "v.getVideoPlaybackQuality().totalVideoFrames); return f.every(n => n > 0) && f; })()")


def visit_offline(page: Path, profile: Path, screenshot: Path, timeout: float = 60.0) -> dict:
    """Open `page` with the network off, wait until every <video>/<audio> has its metadata (or failed), play
    the videos muted for a moment, and screenshot it. What the page did: players (MEDIA's fields per
    element), images ([src, natural width]), decoded (frames per video, or false), errors, requests elsewhere."""
    with Tab(profile) as tab:
        tab.goto(page.resolve().as_uri())
        tab.wait_for(f"({MEDIA}).every(m => m.ready >= 1 || m.error)", timeout)
        players = tab.eval(MEDIA)
        images = tab.eval("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        tab.eval(PLAY_VIDEOS)
        decoded = tab.wait_for(DECODED, 10.0)
        tab.pump(0.5)
        tab.screenshot(screenshot)
        return {"players": players, "images": images, "decoded": decoded, "errors": tab.errors,
                "requests": tab.nonlocal_requests()}
