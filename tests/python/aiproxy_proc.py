"""Starting and stopping an aiproxy binary for the observability tests.

Apart from the shared conftest.py fixture on purpose (it may differ;
only the port comes from ``support``):
``Aiproxy(extra_args).start()`` runs ``target/release/aiproxy --port P
--model-provider mock [...]`` (``AIPROXY_BIN`` overrides the path), waits for
``GET /health`` and ``stop()`` sends SIGTERM.
"""
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

# support's free_port keeps the one record of ports handed out in this
# test process (two records could still give one number twice).
from support import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("AIPROXY_BIN", os.path.join(ROOT, "target", "release", "aiproxy"))


def http_get(url, headers=None, timeout=10):
    """(status, headers, body bytes) of a GET; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def http_post(url, body, headers=None, timeout=30):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class Aiproxy:
    def __init__(self, *extra_args, metrics_port=None, log_path=None):
        self.port = free_port()
        self.metrics_port = metrics_port
        self.args = [BIN, "--port", str(self.port), "--model-provider", "mock"]
        if metrics_port is not None:
            self.args += ["--metrics-port", str(metrics_port)]
        self.args += list(extra_args)
        self.log_path = log_path
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=20):
        assert os.path.exists(BIN), f"{BIN} not built: run `cargo build --release` first"
        self.log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"aiproxy exited with {self.proc.returncode}: {' '.join(self.args)}")
            try:
                status, _, _ = http_get(self.url + "/health", timeout=1)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"aiproxy did not answer /health within {timeout} s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_path and self.log not in (None, subprocess.DEVNULL):
            self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def metrics_text(self, base=None, accept=None):
        status, headers, body = http_get((base or self.url) + "/metrics",
                                         headers={"Accept": accept} if accept else None)
        assert status == 200, f"/metrics answered {status}: {body[:300]!r}"
        return headers.get("Content-Type", ""), body.decode()

    def openai(self):
        import openai
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=30)
