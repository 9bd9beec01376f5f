"""A real headless browser for the report tests: Debian's chromium driven over the DevTools
protocol through a pipe (--remote-debugging-pipe: JSON messages ended by NUL on fds 3 and 4), so
no network port and no extra Python package are needed.

Install: apt-get install -y chromium (Debian 12: chromium 156). The flags keep it off the
network: without the background-networking ones chromium keeps trying to reach Google.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


class Browser:
    """One chromium process with one page; ``errors`` collects uncaught exceptions and console
    errors of every frame."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def use_pipe_fds():  # the child reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4), preexec_fn=use_pipe_fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer, self._next_id, self.errors, self.contexts = b"", 0, [], {}
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Page", "Log"):
            self.call(f"{domain}.enable", session=True)

    # -- protocol
    def _send(self, method, params, session):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _receive(self, timeout):
        import select

        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def _handle_event(self, message):
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details.get("text"))
        elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
            self.errors.append(" ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"{params['entry']['text']} ({params['entry'].get('url', '')})")
        elif method == "Runtime.executionContextCreated":
            context = params["context"]
            self.contexts[context["id"]] = context.get("auxData", {}).get("frameId")
        elif method == "Runtime.executionContextDestroyed":
            self.contexts.pop(params["executionContextId"], None)
        elif method == "Runtime.executionContextsCleared":
            self.contexts.clear()

    def call(self, method, params=None, session=False, timeout=30):
        request = self._send(method, params, session)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self._receive(deadline - time.monotonic())
            if message is None:
                break
            if message.get("id") == request:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self._handle_event(message)
        raise TimeoutError(f"{method}: no answer from chromium in {timeout} s")

    def pump(self, seconds):
        """Handle events for a while (the page's scripts run meanwhile)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self._receive(deadline - time.monotonic())
            if message is not None:
                self._handle_event(message)

    # -- page
    def open(self, url, settle=2.0):
        self.call("Page.navigate", {"url": url}, session=True)
        self.pump(settle)

    def evaluate(self, expression, context=None):
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        if context is not None:
            params["contextId"] = context
        result = self.call("Runtime.evaluate", params, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def in_frames(self, expression):
        """{frame id: value of ``expression``} in every child frame (e.g. the report's result iframe)."""
        main = self.call("Page.getFrameTree", session=True)["frameTree"]["frame"]["id"]
        values = {}
        for context, frame in list(self.contexts.items()):
            if frame and frame != main:
                try:
                    values[frame] = self.evaluate(expression, context)
                except RuntimeError:  # the context of a frame that is gone
                    continue
        return values

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)
