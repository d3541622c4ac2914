"""Memory of requests in flight: the stack a waiting worker keeps.

With ``--workers 10000`` every request or stream in flight holds a worker
thread, and every stack page a waiting worker has touched stays resident:
four 4 KiB pages, 16 KiB of the 23 KiB a request in flight costs (README,
"Requests in flight"; seven pages while upstream calls went through ureq).
A fifth page would put 10,000 in flight over the 250 MB stretch goal (a
page is 40 MB at 10,000), so this guards it on the release binary: 300
requests (or streams)
wait for an upstream that holds its answers, more than the 256 above which
waits free their buffers and peek, so both kinds of wait are here; then
every worker stack's resident size is read from ``/proc/PID/smaps``, and
the answers are let go and checked.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter

import pytest

pytestmark = pytest.mark.timeout(120)

IN_FLIGHT = 300
# src/lib.rs, WORKER_STACK_BYTES: a worker stack is a mapping of this size.
WORKER_STACK_KIB = 512
STACK_PAGES = 4

ANSWER = json.dumps({
    "id": "chatcmpl-held", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "held"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}).encode()


def sse_chunk(data: bytes) -> bytes:
    event = b"data: " + data + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


class HoldingUpstream:
    """An OpenAI upstream that reads each request, starts a stream's answer
    when one is asked for, and holds the (rest of the) answer until
    ``release``; ``held`` counts the requests it holds."""

    def __init__(self):
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._held = 0
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def held(self) -> int:
        with self._lock:
            return self._held

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self._release.set()
        self._sock.close()

    def _accept(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        # Requests one after the other, as the proxy's pool reuses a
        # connection (a model list it asked for at start, then a held one).
        with conn:
            pending = b""
            while True:
                while b"\r\n\r\n" not in pending:
                    data = conn.recv(65536)
                    if not data:
                        return
                    pending += data
                head, _, pending = pending.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                length = int(length.group(1)) if length else 0
                while len(pending) < length:
                    pending += conn.recv(65536)
                body, pending = pending[:length], pending[length:]
                if not head.startswith(b"POST "):
                    models = b'{"object":"list","data":[]}'
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(models), models))
                    continue
                self._hold(conn, json.loads(body).get("stream", False))

    def _hold(self, conn: socket.socket, stream: bool):
        if stream:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n" + sse_chunk(json.dumps({
                             "id": "c", "object": "chat.completion.chunk", "created": 1,
                             "model": "m", "choices": [{"index": 0, "delta": {
                                 "role": "assistant", "content": "held"},
                                 "finish_reason": None}]}).encode()))
        with self._lock:
            self._held += 1
        self._release.wait()
        if stream:
            conn.sendall(sse_chunk(json.dumps({
                "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).encode())
                + sse_chunk(b"[DONE]") + b"0\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))


def worker_stack_rss_kib(pid: int) -> list[int]:
    """Resident KiB of each worker-stack-sized private writable mapping."""
    sizes, mapping = [], None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
            if m:
                mapping = ((int(m.group(2), 16) - int(m.group(1), 16)) // 1024, m.group(3))
            elif line.startswith("Rss:") and mapping == (WORKER_STACK_KIB, "rw-p"):
                sizes.append(int(line.split()[1]))
    return sizes


@pytest.mark.parametrize("stream", [False, True], ids=["requests", "streams"])
def test_a_worker_waiting_for_an_upstream_keeps_four_stack_pages(start_gateway, stream):
    upstream = HoldingUpstream()
    try:
        gw = start_gateway(
            "--model-provider", "openai-custom", "--openai-api-key", "k",
            "--openai-base-url", f"http://127.0.0.1:{upstream.port}/v1",
            "--cache-enabled=false", "--workers", str(IN_FLIGHT + 16),
        )
        body = json.dumps({"model": "m", "stream": stream,
                           "messages": [{"role": "user", "content": "wait"}]}).encode()
        clients = []
        for _ in range(IN_FLIGHT):
            client = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
            client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(body), body))
            clients.append(client)
        deadline = time.monotonic() + 60
        while upstream.held < IN_FLIGHT:
            assert time.monotonic() < deadline, f"only {upstream.held} requests reached the upstream"
            time.sleep(0.05)
        if stream:
            # Each stream's first event reached its client: the relay waits.
            for client in clients:
                assert client.recv(65536).startswith(b"HTTP/1.1 200 OK")
        stacks = worker_stack_rss_kib(gw.proc.pid)
        histogram = sorted(Counter(stacks).items())
        assert len(stacks) >= IN_FLIGHT, histogram
        deepest = sorted(stacks)[-IN_FLIGHT:]
        assert max(deepest) <= STACK_PAGES * 4, (
            f"a waiting worker keeps more than {STACK_PAGES} stack pages "
            f"(resident KiB: count) {histogram}")

        upstream.release()
        for client in clients:
            answer = b""
            while not (answer.endswith(b"0\r\n\r\n") if stream else b"held" in answer):
                chunk = client.recv(65536)
                assert chunk, answer[-200:]
                answer += chunk
            assert stream or answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]
            client.close()
    finally:
        upstream.close()
