"""Slow OpenAI-compatible upstream for tests/bench.sh's in-flight rows.

    python3 tests/bench_sse_mock.py PORT DELTAS DELAY_SECONDS

Answers every chat completion with a stream of DELTAS content chunks,
DELAY_SECONDS apart (the role chunk first, then the deltas, the finish
chunk, a usage chunk when `stream_options.include_usage` asks for it, and
`data: [DONE]`), on HTTP/1.1 keep-alive connections. A non-streamed
request gets the whole answer after DELTAS × DELAY_SECONDS.

Why not aiproxy's own mock provider: it spends a worker thread and a
stream-reader thread per stream, so 10,000 slow streams would cost it
20,000 threads, more than the machine's pid_max leaves beside the proxy
under test. One asyncio loop holds them all with one thread.
"""

import asyncio
import json
import sys

PORT, DELTAS, DELAY = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
WORDS = ["mock"] + ["word"] * (DELTAS - 1)


def chunk(delta, finish=None, usage=None):
    v = {"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 0,
         "model": "mock-small",
         "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        v["usage"] = usage
    data = b"data: " + json.dumps(v, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


USAGE = {"prompt_tokens": 8, "completion_tokens": DELTAS, "total_tokens": 8 + DELTAS}
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
FIRST = chunk({"role": "assistant", "content": ""})
DELTA = [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(WORDS)]
LAST = chunk({}, "stop")
USAGE_CHUNK = chunk(None, usage=USAGE)
DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"


def whole(body):
    return json.dumps({
        "id": "chatcmpl-slow", "object": "chat.completion", "created": 0, "model": "mock-small",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": " ".join(WORDS)}}],
        "usage": USAGE}).encode()


def plain(status, body):
    return (b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (status, len(body))) + body


MODELS = plain(200, b'{"object":"list","data":[{"id":"mock-small","object":"model",'
                    b'"owned_by":"bench"}]}')


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            method, path = head.split(b" ", 2)[:2]
            if method != b"POST":
                writer.write(MODELS if path.endswith(b"/models") else plain(200, b"{}"))
                continue
            req = json.loads(body)
            if not req.get("stream"):
                await asyncio.sleep(DELAY * DELTAS)
                writer.write(plain(200, whole(req)))
                continue
            writer.write(HEAD + FIRST)
            for d in DELTA:
                await asyncio.sleep(DELAY)
                writer.write(d)
                await writer.drain()
            usage = (req.get("stream_options") or {}).get("include_usage")
            writer.write(LAST + (USAGE_CHUNK if usage else b"") + DONE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", PORT, backlog=4096)
    async with server:
        await server.serve_forever()


asyncio.run(main())
