"""The compose stack of packaging/compose/ as plain processes on loopback,
for the HA drill (test_ha_drill.py).

No container engine runs in CI, so each compose service becomes a process
on a free 127.0.0.1 port, configured from the files users copy:

* ``Redis``: redis-server without persistence, as in the compose file;
* ``Node``: the aiproxy binary with the environment of its compose
  service (``NODE_ID``, ``REDIS_ADDR``, ``SEED_NODES``, the cluster secret
  ...) and the image's ``AIPROXY_HOST``/``AIPROXY_PORT``, service names
  mapped to loopback addresses;
* ``Nginx``: Debian's nginx with packaging/compose/nginx.conf, where only
  the upstream servers and the listen port are substituted;
* ``Prometheus``: packaging/compose/prometheus.yml with the targets
  substituted and 1 s scrape and evaluation intervals, the alert rules of
  packaging/prometheus/ beside it, as the compose file mounts them.

Every process is started with ``subprocess.Popen`` and stopped by its PID
(SIGTERM, then SIGKILL after a bounded wait); every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from support import OUTPUT_DIR, REPO_ROOT, binary_path, free_port, gateway_environment

COMPOSE_DIR = REPO_ROOT / "packaging" / "compose"
RULES = REPO_ROOT / "packaging" / "prometheus" / "aiproxy.rules.yml"
LOG_DIR = OUTPUT_DIR / "ha-drill"

API_KEY = "sk-ha-drill-key"
CLUSTER_SECRET = "ha-drill-cluster-secret-0123456789"


def wait_until(what: str, limit: float, check, interval: float = 0.05):
    """Polls ``check()`` until it returns a true value, which is returned;
    raises AssertionError naming ``what`` after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    last_error = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (OSError, ValueError, KeyError) as e:  # not up yet
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"not within {limit} s: {what}{detail}")
        time.sleep(interval)


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None,
         timeout: float = 10) -> tuple[int, dict, bytes]:
    """(status, lower-cased headers, body); HTTP errors are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=data, method=method, headers={**hdrs, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


class Process:
    """One started program, stopped by its PID."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None, cwd: Path | None = None):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = LOG_DIR / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def spawn(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already runs"
        self._log = open(self.log_path, "ab")
        self._log.write(f"---- start {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=self.env, cwd=self.cwd,
            # Its own process group: the runner's Ctrl-C is not its signal.
            start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.running(), f"{self.name} is not running"
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM by PID, SIGKILL by PID if it outlives ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._log and not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def log_text(self) -> str:
        if self._log and not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def require(program: str) -> str:
    path = shutil.which(program) or (f"/usr/sbin/{program}" if os.path.exists(f"/usr/sbin/{program}") else None)
    assert path, f"{program} not found: tests/run.sh installs it (apt-get install {program})"
    return path


# ---- Redis ----------------------------------------------------------------------


def resp_command(port: int, *words: str) -> bytes:
    """One Redis command over RESP; the raw reply line."""
    payload = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(payload.encode())
        return s.recv(4096)


class Redis(Process):
    def __init__(self, workdir: Path):
        self.port = free_port()
        # As in the compose file: no snapshots, no append-only file.
        super().__init__("redis", [require("redis-server"), "--bind", "127.0.0.1",
                                   "--port", str(self.port), "--save", "", "--appendonly", "no",
                                   "--dir", str(workdir)])

    def start(self) -> "Redis":
        self.spawn()
        wait_until("redis answers PING", 10, lambda: resp_command(self.port, "PING") == b"+PONG\r\n")
        return self

    def dbsize(self) -> int:
        reply = resp_command(self.port, "DBSIZE")
        assert reply.startswith(b":"), reply
        return int(reply[1:].strip())


# ---- the compose file's aiproxy services ---------------------------------------


def compose_environment(service: str, variables: dict[str, str]) -> dict[str, str]:
    """The ``environment:`` list of ``service`` in docker-compose.yml, with
    ``${NAME:?message}`` and ``${NAME:-default}`` filled from ``variables``
    as docker-compose does (a small reader for this one file's layout: a
    list of ``- NAME=value`` items)."""
    lines = (COMPOSE_DIR / "docker-compose.yml").read_text().splitlines()
    start = lines.index(f"  {service}:")
    env: dict[str, str] = {}
    in_env = False
    for line in lines[start + 1:]:
        if re.match(r"^  \S", line) or re.match(r"^\S", line):
            break  # the next service or section
        if re.match(r"^    environment:\s*$", line):
            in_env = True
            continue
        if in_env:
            item = re.match(r"^      - ([A-Z0-9_]+)=(.*)$", line)
            if not item:
                if re.match(r"^    \S", line):
                    in_env = False
                continue
            env[item.group(1)] = _interpolate(item.group(2), variables)
    assert env, f"no environment for {service} in docker-compose.yml"
    return env


def _interpolate(value: str, variables: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if op == ":?":
            assert name in variables, f"docker-compose.yml needs {name}: {arg}"
            return variables[name]
        return variables.get(name, arg)
    return re.sub(r"\$\{([A-Z0-9_]+)(:\?|:-)([^}]*)\}", one, value)


class Node(Process):
    """aiproxy as a compose service: ``service``'s environment, the image's
    ``AIPROXY_HOST``/``AIPROXY_PORT``, compose names mapped by ``hosts``
    (``aiproxy2:3000`` -> ``127.0.0.1:PORT``), plus ``extra`` settings."""

    def __init__(self, service: str, port: int, hosts: dict[str, str], extra: dict[str, str]):
        self.service = service
        self.port = port
        env = compose_environment(service, {"AIPROXY_API_KEY": API_KEY,
                                            "AIPROXY_CLUSTER_SECRET": CLUSTER_SECRET})
        for key, value in env.items():
            for name, addr in hosts.items():
                value = value.replace(name, addr)
            env[key] = value
        self.compose_env = env
        full = {**gateway_environment(), **env,
                # What packaging/Dockerfile sets, on loopback.
                "AIPROXY_HOST": "127.0.0.1", "AIPROXY_PORT": str(port), **extra}
        binary = binary_path()
        assert binary.exists(), f"aiproxy binary not found at {binary} (build it or set AIPROXY_BIN)"
        super().__init__(service, [str(binary)], env=full, cwd=OUTPUT_DIR)

    @property
    def node_id(self) -> str:
        return self.compose_env["NODE_ID"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Node":
        self.spawn()

        def ready():
            assert self.running(), f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}"
            return http("GET", self.url + "/health", timeout=2)[0] == 200
        wait_until(f"{self.name} answers /health", 15, ready, interval=0.02)
        return self

    def get_json(self, path: str):
        status, _, body = http("GET", self.url + path, headers={"Authorization": f"Bearer {API_KEY}"})
        assert status == 200, f"{self.name} GET {path}: {status} {body[:300]!r}"
        return json.loads(body)

    def request(self, method: str, path: str):
        return http(method, self.url + path, headers={"Authorization": f"Bearer {API_KEY}"})

    def member_state(self, node_id: str) -> str | None:
        """The state of ``node_id`` as this node sees it."""
        for n in self.get_json("/cluster/status")["nodes"]:
            if n["node_id"] == node_id:
                return n["state"]
        return None

    def mock_in_flight(self) -> int:
        """Requests this node has at its mock provider right now."""
        instances = self.get_json("/loadbalancer/instances")["instances"]
        return sum(i["in_flight"] for i in instances if i["provider"] == "mock")


# ---- nginx ----------------------------------------------------------------------


class Nginx(Process):
    """nginx with the shipped nginx.conf: the compose names of the upstream
    servers and the listen port substituted, nothing else."""

    def __init__(self, workdir: Path, upstreams: dict[str, str]):
        self.port = free_port()
        shipped = (COMPOSE_DIR / "nginx.conf").read_text()
        conf = shipped
        for name, addr in upstreams.items():
            conf, n = re.subn(rf"(\n\s*server ){re.escape(name)}(\s)", rf"\g<1>{addr}\g<2>", conf)
            assert n == 1, f"nginx.conf has {n} `server {name}` lines, expected 1"
        conf, n = re.subn(r"(\n\s*listen )80;", rf"\g<1>127.0.0.1:{self.port};", conf)
        assert n == 1, f"nginx.conf has {n} `listen 80;` lines, expected 1"
        changed = [(a, b) for a, b in zip(shipped.splitlines(), conf.splitlines()) if a != b]
        assert len(changed) == len(upstreams) + 1, changed
        self.workdir = workdir
        self.conf_path = workdir / "nginx.conf"
        self.conf_path.write_text(conf)
        (workdir / "logs").mkdir(exist_ok=True)
        # Only main-context settings on the command line: run in the
        # foreground, pid and error log in the drill's directory.
        globals_ = f"daemon off; pid {workdir}/nginx.pid; error_log {workdir}/error.log info;"
        super().__init__("nginx", [require("nginx"), "-p", str(workdir), "-c", str(self.conf_path),
                                   "-g", globals_])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Nginx":
        check = subprocess.run(self.argv + ["-t", "-q"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"nginx -t: {check.stderr}"
        self.spawn()

        def ready():
            assert self.running(), f"nginx exited:\n{self.log_text()}\n{self.error_log()}"
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        wait_until("nginx listens", 10, ready)
        return self

    def error_log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> list[dict]:
        """The access log (the shipped ``upstreams`` format, on stdout),
        one dict per request: request, status, upstreams tried."""
        out = []
        for line in self.log_text().splitlines():
            m = re.search(r'"(?P<request>[^"]*)" (?P<status>\d{3}) \d+ upstream="(?P<up>[^"]*)" '
                          r'upstream_status="(?P<ups>[^"]*)"', line)
            if m:
                # "a, b" when nginx went on to the next server; "-" when
                # it answered without one.
                tried = [a for a in re.split(r",\s*|\s+:\s+", m.group("up")) if a and a != "-"]
                out.append({"request": m.group("request"), "status": int(m.group("status")),
                            "upstreams": tried, "upstream_status": m.group("ups")})
        return out


# ---- Prometheus -----------------------------------------------------------------


class Prometheus(Process):
    """Prometheus with the shipped prometheus.yml (targets substituted,
    scrape and rule evaluation every second) and the shipped alert rules."""

    def __init__(self, workdir: Path, targets: dict[str, str]):
        self.port = free_port()
        shipped = (COMPOSE_DIR / "prometheus.yml").read_text()
        conf = shipped
        for name, addr in targets.items():
            conf, n = re.subn(rf'"{re.escape(name)}"', f'"{addr}"', conf)
            assert n == 1, f"prometheus.yml names {name} {n} times, expected 1"
        for key in ("scrape_interval", "evaluation_interval"):
            conf, n = re.subn(rf"(\n\s*{key}: )\S+", r"\g<1>1s", conf)
            assert n == 1, f"prometheus.yml has {n} {key} lines"
        self.workdir = workdir
        (workdir / "prometheus.yml").write_text(conf)
        shutil.copy(RULES, workdir / RULES.name)
        (workdir / "data").mkdir(exist_ok=True)
        super().__init__("prometheus", [
            require("prometheus"), f"--config.file={workdir}/prometheus.yml",
            f"--storage.tsdb.path={workdir}/data", f"--web.listen-address=127.0.0.1:{self.port}"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Prometheus":
        self.spawn()

        def ready():
            assert self.running(), f"prometheus exited:\n{self.log_text()[-3000:]}"
            return http("GET", self.url + "/-/ready", timeout=2)[0] == 200
        wait_until("prometheus ready", 30, ready, interval=0.1)
        return self

    def api(self, path: str):
        status, _, body = http("GET", self.url + path)
        assert status == 200, f"prometheus {path}: {status} {body[:300]!r}"
        data = json.loads(body)
        assert data["status"] == "success", data
        return data["data"]

    def target_health(self) -> dict[str, str]:
        """instance -> up/down/unknown of the aiproxy job."""
        return {t["labels"]["instance"]: t["health"]
                for t in self.api("/api/v1/targets?state=active")["activeTargets"]
                if t["labels"].get("job") == "aiproxy"}

    def alerts(self) -> list[dict]:
        return self.api("/api/v1/alerts")["alerts"]

    def rule_names(self) -> set[str]:
        return {r["name"] for g in self.api("/api/v1/rules")["groups"] for r in g["rules"]}


# ---- a small WebSocket client (RFC 6455), text frames only -----------------------


class WebSocket:
    """Just enough of a WebSocket client for the drill: the upgrade, masked
    text frames out, text frames in (ping answered, close ends). The test
    dependencies stay the SDKs."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 15):
        import base64
        import hashlib

        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, f"connection closed during the upgrade: {head!r}"
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        assert status.startswith(b"HTTP/1.1 101"), f"upgrade refused: {head.decode(errors='replace')}"
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in head.decode().split("\r\n")[1:])}
        assert headers.get("sec-websocket-accept") == accept, head

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed mid-frame"
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            length = bytes([0x80 | n])
        elif n < 65536:
            length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode]) + length + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def recv(self) -> str:
        """The next text message (fragments joined); pings are answered."""
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._read(2), "big")
            elif n == 127:
                n = int.from_bytes(self._read(8), "big")
            assert not b1 & 0x80, "server frames are not masked"
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            assert opcode != 0x8, f"closed by the server: {payload!r}"
            if opcode in (0x1, 0x0):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def close(self) -> None:
        try:
            self._send_frame(0x8, (1000).to_bytes(2, "big"))
        except OSError:
            pass
        self.sock.close()
