"""
Headless Chromium for the integration tests, driven through chromedriver's
W3C WebDriver HTTP API with the standard library only (no selenium).

chromedriver is started in a session (and so a process group) of its own;
the Chromium it starts inherits that group. L{Browser.stop} ends the
WebDriver session, then kills the whole group by its id, and waits until no
process started with this browser's profile directory is left.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import struct
import subprocess
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any

from tests.integration.daemon import HOST, freePort, poll

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1360, 820


class WebDriverError(Exception):
    """
    A WebDriver command answered with an error.
    """


class Browser:
    """
    One chromedriver process and one headless Chromium session.

    @ivar profile: Chromium's user data directory, unique to this browser: it
        names this browser's processes on the command line.
    """

    def __init__(self, directory: Path, chromium: str = CHROMIUM, driver: str = CHROMEDRIVER):
        self.profile = directory / "chromium-profile"
        self.profile.mkdir()
        self.port = freePort()
        self.logPath = directory / "chromedriver.log"
        self._log = self.logPath.open("wb")
        self.session: str | None = None
        self.stopped = False
        self.popen = subprocess.Popen(
            [
                driver,
                f"--port={self.port}",
                "--allowed-ips=127.0.0.1",
                f"--log-path={self.logPath}",
            ],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pgid = self.popen.pid
        try:
            poll(self._driverReady, 20, "chromedriver to be ready")
            self.session = self._newSession(chromium)
        except BaseException:
            self.stop()
            raise

    def _driverReady(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"chromedriver exited with {self.popen.returncode}")
        return bool(self._call("GET", "/status", timeout=2)["ready"])

    def _call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://{HOST}:{self.port}{path}", data=data, method=method
        )
        request.add_header("Content-Type", "application/json; charset=utf-8")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as e:
            answer = json.loads(e.read() or b"{}")
            value = answer.get("value", {})
            raise WebDriverError(
                f"{method} {path}: {e.code} {value.get('error')}: {value.get('message')}"
            ) from None
        return answer["value"]

    def _newSession(self, chromium: str) -> str:
        options = {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                f"--user-data-dir={self.profile}",
                f"--window-size={WIDTH},{HEIGHT}",
            ],
        }
        value = self._call(
            "POST",
            "/session",
            {
                "capabilities": {
                    "alwaysMatch": {
                        "goog:chromeOptions": options,
                        "goog:loggingPrefs": {"browser": "ALL"},
                    }
                }
            },
            timeout=60,
        )
        return str(value["sessionId"])

    def command(self, method: str, path: str, body: Any = None) -> Any:
        """
        A command of the current session: C{path} is below C{/session/ID}.
        """
        assert self.session is not None
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        """
        Load C{url} and wait for the load event.
        """
        self.command("POST", "/url", {"url": url})

    def viewport(self, width: int, height: int) -> None:
        """
        Make the page's viewport C{width} x C{height} CSS pixels, at one
        device pixel each (a laptop screen, say), through Chromium's device
        emulation.
        """
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.command(
            "POST",
            "/goog/cdp/execute",
            {"cmd": "Emulation.setDeviceMetricsOverride", "params": metrics},
        )

    def run(self, script: str, *args: Any) -> Any:
        """
        The value of C{script}, a function body, in the page.
        """
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def consoleErrors(self) -> list[str]:
        """
        The messages of severity SEVERE in the page's console since the last
        call (errors of scripts, refused resources, CSP violations).
        """
        entries = self.command("POST", "/se/log", {"type": "browser"})
        return [str(e["message"]) for e in entries if e["level"] == "SEVERE"]

    def screenshot(self) -> bytes:
        """
        The current viewport as PNG bytes.
        """
        return base64.b64decode(self.command("GET", "/screenshot"))

    def processes(self) -> list[int]:
        """
        The PIDs of the processes started with this browser's profile
        directory on their command line: this test's Chromium processes.
        """
        marker = str(self.profile).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                commandLine = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in commandLine:
                found.append(int(entry.name))
        return found

    def stop(self) -> None:
        """
        End the session, kill chromedriver's process group, reap chromedriver,
        and make sure no Chromium process of this browser is left.
        """
        if self.stopped:
            return
        self.stopped = True
        try:
            if self.session is not None and self.popen.poll() is None:
                with contextlib.suppress(OSError, WebDriverError):
                    self._call("DELETE", f"/session/{self.session}", timeout=10)
            self.session = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
            self.popen.wait(10)
            self._log.close()
        poll(lambda: not self.processes(), 10, "every Chromium process to exit", step=0.1)


def pngSize(data: bytes) -> tuple[int, int]:
    """
    The width and height of a PNG image, after decoding it entirely: every
    chunk's CRC is checked and the image data must inflate to exactly the
    size its header announces (8-bit RGB or RGBA, not interlaced).

    @raise AssertionError: it is not such a PNG.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    offset = 8
    chunks: list[tuple[bytes, bytes]] = []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        chunks.append((kind, body))
        offset += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND", "not a complete PNG"
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    channels = {2: 3, 6: 4}[colour]
    assert depth == 8 and interlace == 0
    pixels = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(pixels) == height * (1 + width * channels), "image data of the wrong size"
    return width, height
