#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/ from the golden fixtures, the
recorded streams, the config examples and hand-written SDK request heads.

Re-run after adding fixtures: `python3 fuzz/seed_corpus.py`. Files are named
after what they are; fuzz runs add hash-named files only to a scratch
corpus (see fuzz/run.sh), so these stay few and readable.
"""
import glob
import hashlib
import hmac
import json
import os
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ------------------------------------------------------------- conversions
PROTOS = ["openai", "anthropic", "gemini", "responses"]
for proto in PROTOS:
    seen = {}
    for path in sorted(glob.glob(os.path.join(FIX, f"{proto}_to_*", "*.json"))):
        if path.endswith(".expected.json"):
            continue
        data = read(path)
        seen.setdefault(data, os.path.basename(path))
    # The other protocols' converted outputs are good inputs too: what a
    # converted request looks like is what clients of that protocol send.
    for path in sorted(glob.glob(os.path.join(FIX, f"*_to_{proto}", "*.expected.json"))):
        data = read(path)
        tag = os.path.basename(os.path.dirname(path)).split("_to_")[0]
        seen.setdefault(data, f"from_{tag}-{os.path.basename(path)}")
    for data, name in seen.items():
        put(f"convert_{proto}", name, data)
    put(f"convert_{proto}", "empty_object.json", "{}")
    put(f"convert_{proto}", "not_an_object.json", "[1,2,3]")
    put(f"convert_{proto}", "deep_nesting.json", '{"a":' * 120 + "1" + "}" * 120)
    put(
        f"convert_{proto}",
        "wrong_types.json",
        '{"model":"m","stream":true,"messages":{"role":7},"contents":"x",'
        '"tools":[null,{"type":"function","function":{"name":null,"parameters":[]}}],'
        '"max_tokens":-1e308,"temperature":"hot","system":[{"type":"text"}]}',
    )
put(
    "convert_openai",
    "stream_usage_tools.json",
    json.dumps(
        {
            "model": "gpt-4o",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{\"a\":1}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {
                            "type": "object",
                            "properties": {"a": {"type": "integer", "format": "int32"}},
                            "$schema": "http://json-schema.org/draft-07/schema#",
                            "additionalProperties": False,
                        },
                    },
                }
            ],
            "tool_choice": "required",
            "response_format": {"type": "json_object"},
        }
    ),
)

# ----------------------------------------------------------------- streams
STREAMS = os.path.join(FIX, "streams")
for proto in PROTOS:
    for path in sorted(glob.glob(os.path.join(STREAMS, proto, "*.sse"))):
        put("sse_decode", f"{proto}-{os.path.basename(path)}", read(path))
SSE_EDGES = {
    "crlf_and_comments.sse": b"event: message_start\r\ndata: {\"x\":\"\xc3\xa9\"}\r\n\r\n: ping\r\n\r\n",
    "bare_cr_bom.sse": b"\xef\xbb\xbfdata: one\r\rdata: two\rdata\n\n: c\nid: 7\nretry: 9\ndata: last",
    "multiline_data.sse": b"event: x\n\nevent: y\ndata:  two spaces\ndata:\ndata: third\n\n\n\n",
    "split_utf8.sse": b"data: \xe2\x82\n\ndata: \xac\n\n",
    "done_marker.sse": b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n",
}
for name, data in SSE_EDGES.items():
    put("sse_decode", name, data)

# stream_convert: control byte (from, to, framing, fail) + read-size byte.
for fi, proto in enumerate(PROTOS):
    for path in sorted(glob.glob(os.path.join(STREAMS, proto, "*.sse"))):
        stem = os.path.basename(path)[:-4]
        data = read(path)
        variants = [(0, 0, "sse"), (1, 0, "sse"), (2, 0, "sse"), (2, 1, "array"), (3, 0, "sse")]
        for n, (ti, fr, fname) in enumerate(variants):
            fail = (n + fi) % 2
            control = fi + 4 * ti + 16 * fr + 32 * fail
            seed = (37 * n + 11 * fi) % 256
            name = f"{proto}_to_{PROTOS[ti]}-{fname}-{stem}{'-fail' if fail else ''}"
            put("stream_convert", name, bytes([control, seed]) + data)
put("stream_convert", "anthropic_upstream_error", bytes([1 + 4 * 0, 5]) +
    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n')
put("stream_convert", "openai_garbage_to_anthropic", bytes([0 + 4 * 1, 200]) +
    b'data: {not json\n\ndata: [1,2]\n\ndata: {"choices":[{"delta":{"tool_calls":[{"index":5,"function":{"arguments":"{"}}]}}]}\n\n')
put("stream_convert", "gemini_wrapped_to_gemini_array", bytes([2 + 4 * 2 + 16, 3]) +
    b'data: {"response":{"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]},"finishReason":"STOP"}]}}\r\n\r\n')

put("stream_convert", "responses_upstream_failed_to_anthropic", bytes([3 + 4 * 1, 9]) +
    b'event: response.created\ndata: {"type":"response.created","response":{"id":"r","status":"in_progress","output":[]}}\n\n'
    b'event: response.failed\ndata: {"type":"response.failed","response":{"id":"r","status":"failed",'
    b'"error":{"code":"server_error","message":"boom"}}}\n\n')
put("stream_convert", "openai_tool_restart_to_responses", bytes([0 + 4 * 3, 77]) +
    b'data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{"}}]}}]}\n\n'
    b'data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"b","function":{"name":"g","arguments":"}"}}]}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"x"},"finish_reason":"length"}]}\n\ndata: [DONE]\n\n')

# ------------------------------------------------------------------ config
put("config_yaml", "feature-guide-config.yaml", read(os.path.join(FIX, "feature-guide-config.yaml")))
put("config_yaml", "packaging-config.yaml", read(os.path.join(ROOT, "packaging", "config.yaml")))
put("config_yaml", "empty.yaml", "")
put("config_yaml", "comments_only.yaml", "# nothing\n# here\n")
put("config_yaml", "unknown_key.yaml", "host: 127.0.0.1\nport: 3000\nbogus: 1\n")
put("config_yaml", "wrong_types.yaml", "port: [1, 2]\nworkers: -3\ncache: yes\nlimits: {max_body_bytes: 1e99}\n")
put(
    "config_yaml",
    "billion_laughs.yaml",
    "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n"
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n",
)
put("config_yaml", "deep_nesting.yaml", "[" * 200 + "]" * 200 + "\n")
put("config_yaml", "merge_keys.yaml", "base: &b {enabled: true, port: 9090}\nmetrics:\n  <<: *b\n  port: 9091\n")
put("config_yaml", "two_documents.yaml", "host: 0.0.0.0\n---\nhost: 127.0.0.1\n")
put("config_yaml", "tabs_and_flow.yaml", "model_providers: [mock,\n\topenai-custom]\nlog: {level: debug, format: json}\n")

# ------------------------------------------------------------------- pools
POOLS = os.path.join(FIX, "pools")
put("pools_file", "original.json", read(os.path.join(POOLS, "provider_pools.json")))
put("pools_file", "same.yaml", read(os.path.join(POOLS, "provider_pools.yaml")))
put("pools_file", "empty_object.json", "{}")
put("pools_file", "short_ids.yaml", "gemini-cli: [{uuid: g1, GEMINI_OAUTH_CREDS_FILE_PATH: /a.json}]\nmock: [{uuid: m1, weight: 2}]\n")
put("pools_file", "unknown_key.json", '{"openai-custom": [{"uuid": "a", "OPENAI_KEY": "x"}]}')
put("pools_file", "duplicate_uuid.json", '{"mock": [{"uuid": "a"}], "kiro-api": [{"uuid": "a"}]}')
put("pools_file", "wrong_types.json",
    '{"openai-custom": [{"uuid": 7, "weight": "x", "isDisabled": "no", "supportedModels": "m"}]}')
put("pools_file", "foreign_provider.json", '{"openai-iflow": [{"IFLOW_TOKEN_FILE_PATH": "x"}], "mock": []}')
put("pools_file", "deep_nesting.json", '{"mock": [{"uuid": "a", "isHealthy": ' + "[" * 200 + "]" * 200 + "}]}")
put("pools_file", "alias_bomb.yaml",
    "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n"
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "mock: [{uuid: x, customName: *c}]\n")

# ------------------------------------------------------------------- route
ROUTES = [
    "POST /v1/chat/completions", "POST /chat/completions", "GET /v1/models",
    "POST /v1/messages", "POST /v1/messages/count_tokens", "GET /v1beta/models",
    "GET /v1beta/models/gemini-2.5-pro", "POST /v1beta/models/gemini-2.5-flash:generateContent",
    "POST /v1beta/models/gemini-2.5-flash:streamGenerateContent",
    "POST /v1/models/models/x:generateContent", "GET /health", "GET /metrics",
    "GET /dashboard", "GET /dashboard/summary.json", "GET /cache/stats",
    "DELETE /cache/clear", "PUT /cache/enable", "PUT /cache/disable",
    "OPTIONS /v1/messages", "POST /kiro-api/v1/messages",
    "POST /claude-kiro-oauth/v1/messages", "POST /gemini-cli-oauth/v1beta/models/m:generateContent",
    "GET /mock", "POST /openai-custom/v1/chat/completions/", "GET /v1beta/models/:generateContent",
    "HEAD /health//", "GET /QWEN-API/v1/models", "POST /v1beta/models/a:b:streamGenerateContent",
    "POST /v1/responses", "POST /responses", "POST /gemini-cli/v1/responses/", "GET /v1/responses",
    "GET /ws", "POST /ws", "GET /mock/ws",
]
for i, r in enumerate(ROUTES):
    put("route", f"{i:02}-" + r.replace("/", "_").replace(" ", "_").replace(":", "_")[:60], r)

# ------------------------------------------------------------------- heads
def body_of(proto, case):
    return read(os.path.join(FIX, f"{proto}_to_{'anthropic' if proto != 'anthropic' else 'openai'}", case))

OPENAI_BODY = body_of("openai", "tools_roundtrip.request.json")
ANTHROPIC_BODY = body_of("anthropic", "tools_roundtrip.request.json")
GEMINI_BODY = body_of("gemini", "tools_roundtrip.request.json")


def head(lines, body=b""):
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


put("http_head", "openai_python_sdk", head([
    "POST /v1/chat/completions HTTP/1.1", "Host: localhost:3000",
    "Accept-Encoding: gzip, deflate", "Connection: keep-alive", "Accept: application/json",
    "Content-Type: application/json", "User-Agent: OpenAI/Python 1.54.4",
    "X-Stainless-Lang: python", "X-Stainless-Package-Version: 1.54.4",
    "X-Stainless-OS: Linux", "X-Stainless-Arch: x64", "X-Stainless-Runtime: CPython",
    "X-Stainless-Runtime-Version: 3.11.7", "Authorization: Bearer sk-test",
    "X-Stainless-Async: false", "x-stainless-retry-count: 0", "x-stainless-read-timeout: 600",
    f"Content-Length: {len(OPENAI_BODY)}",
], OPENAI_BODY))
put("http_head", "anthropic_python_sdk", head([
    "POST /v1/messages HTTP/1.1", "Host: localhost:3000",
    "accept-encoding: gzip, deflate", "connection: keep-alive", "accept: application/json",
    "content-type: application/json", "user-agent: Anthropic/Python 0.40.0",
    "x-stainless-lang: python", "x-stainless-package-version: 0.40.0", "x-stainless-os: Linux",
    "x-stainless-arch: x64", "x-stainless-runtime: CPython", "x-stainless-runtime-version: 3.11.7",
    "x-stainless-async: false", "anthropic-version: 2023-06-01", "x-api-key: sk-ant-test",
    "anthropic-beta: prompt-caching-2024-07-31", "x-stainless-retry-count: 0",
    "x-stainless-timeout: 600", f"content-length: {len(ANTHROPIC_BODY)}",
], ANTHROPIC_BODY))
put("http_head", "google_genai_python_sdk_stream", head([
    "POST /v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse HTTP/1.1",
    "Host: localhost:3000", "Accept-Encoding: gzip, deflate", "Connection: keep-alive",
    "Accept: */*", "Content-Type: application/json", "x-goog-api-key: test-key",
    "user-agent: google-genai-sdk/1.20.0 gl-python/3.11.7",
    "x-goog-api-client: google-genai-sdk/1.20.0 gl-python/3.11.7",
    f"Content-Length: {len(GEMINI_BODY)}",
], GEMINI_BODY))
CODEX_BODY = read(os.path.join(FIX, "responses_to_openai", "tool_items.request.json"))
put("http_head", "codex_cli_responses", head([
    "POST /v1/responses HTTP/1.1", "host: 127.0.0.1:3000", "accept: text/event-stream",
    "content-type: application/json", "authorization: Bearer sk-test", "originator: codex_exec",
    "user-agent: codex_exec/0.171.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.171.0)",
    "session-id: 00000000-0000-7000-8000-000000000000", "x-codex-beta-features: remote_compaction_v2",
    "accept-encoding: zstd,gzip", f"content-length: {len(CODEX_BODY)}",
], CODEX_BODY))
put("http_head", "gemini_key_in_query", head([
    "POST /gemini-cli-oauth/v1beta/models/gemini-2.5-pro:generateContent?key=a%20b+c&x HTTP/1.1",
    "Host: 127.0.0.1", "Content-Length: 2"], b"{}"))
put("http_head", "curl_models_get", head([
    "GET /v1/models HTTP/1.1", "Host: localhost:3000", "User-Agent: curl/8.5.0",
    "Accept: */*", "Authorization: Bearer k"]))
put("http_head", "chunked_post_pipelined", head([
    "POST /v1/messages HTTP/1.1", "Host: x", "Transfer-Encoding: chunked",
    "x-api-key: k"], b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\n")
    + head(["GET /health HTTP/1.1", "Host: x"]) + head(["GET /metrics HTTP/1.1", "Host: x", "Connection: close"]))
put("http_head", "expect_continue", head([
    "POST /v1/chat/completions HTTP/1.1", "Host: x", "Expect: 100-continue",
    "Content-Length: 5"], b"hello"))
put("http_head", "http10_keep_alive", head(["GET /health HTTP/1.0", "Connection: keep-alive"]) + head(["GET / HTTP/1.0"]))
put("http_head", "bare_lf", b"GET /health HTTP/1.1\nHost: x\n\nGET /v1/models HTTP/1.1\nHost: x\n\n")
put("http_head", "both_framings", head(["POST / HTTP/1.1", "Host: x", "Content-Length: 3", "Transfer-Encoding: chunked"], b"abc"))
put("http_head", "duplicate_content_length", head(["POST / HTTP/1.1", "Host: x", "Content-Length: 3", "Content-Length: 3"], b"abcGET / HTTP/1.1\r\nHost: x\r\n\r\n"))
put("http_head", "conflicting_content_length", head(["POST / HTTP/1.1", "Host: x", "Content-Length: 3", "Content-Length: 4"], b"abcd"))
put("http_head", "huge_content_length", head(["POST /v1/messages HTTP/1.1", "Host: x", "Content-Length: 100000000000"]))
put("http_head", "signed_content_length", head(["POST /v1/messages HTTP/1.1", "Host: x", "Content-Length: +3"], b"abc"))
put("http_head", "gzip_transfer_encoding", head(["POST / HTTP/1.1", "Host: x", "Transfer-Encoding: gzip, chunked"], b"0\r\n\r\n"))
put("http_head", "absolute_form_target", head(["GET http://example.com/v1/models HTTP/1.1", "Host: example.com"]))
put("http_head", "http2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
put("http_head", "non_utf8_header", b"GET / HTTP/1.1\r\nHost: x\r\nX-Bin: \xff\xfe\r\n\r\n")
put("http_head", "many_headers", head(["GET / HTTP/1.1", "Host: x"] + [f"X-{i}: v" for i in range(110)]))
put("http_head", "partial_head", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
put("http_head", "unsupported_expect", head(["POST / HTTP/1.1", "Host: x", "Expect: 200-ok", "Content-Length: 1"], b"x"))
put("http_head", "websocket_upgrade", head([
    "GET /v1/realtime HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]))

# RFC 9112 Host and request-target rules (issue 10).
put("http_head", "missing_host", head(["GET /health HTTP/1.1", "Accept: */*"]))
put("http_head", "duplicate_host", head(["GET /health HTTP/1.1", "Host: localhost", "Host: evil.example"]))
put("http_head", "invalid_host", head(["GET /health HTTP/1.1", "Host: user@evil.example"]))
put("http_head", "ipv6_host_with_port", head(["GET /health HTTP/1.1", "Host: [::1]:3000"]))
put("http_head", "http10_without_host", head(["GET /health HTTP/1.0"]))
put("http_head", "absolute_form_empty_path_with_query", head(["GET http://127.0.0.1:3000?key=k HTTP/1.1", "Host: evil.example"]))
put("http_head", "absolute_form_userinfo", head(["GET http://localhost@evil.example/health HTTP/1.1", "Host: localhost"]))
put("http_head", "options_asterisk", head(["OPTIONS * HTTP/1.1", "Host: x"]) + head(["GET /health HTTP/1.1", "Host: x"]))
put("http_head", "get_asterisk", head(["GET * HTTP/1.1", "Host: x"]))
put("http_head", "expect_list_with_unknown", head(["POST / HTTP/1.1", "Host: x", "Expect: 100-continue, foo", "Content-Length: 1"], b"x"))
put("http_head", "http10_chunked_keep_alive", head([
    "POST /v1/messages HTTP/1.0", "Connection: keep-alive", "Transfer-Encoding: chunked"],
    b"5\r\nhello\r\n0\r\n\r\n") + head(["GET /health HTTP/1.0"]))
put("http_head", "chunked_bare_lf_then_pipelined", head([
    "POST /v1/messages HTTP/1.1", "Host: x", "Transfer-Encoding: chunked"],
    b"5\nhello\n0\n\n") + head(["GET /admin HTTP/1.1", "Host: x"]))
put("http_head", "chunked_trailer_smuggles_a_request", head([
    "POST /v1/messages HTTP/1.1", "Host: x", "Transfer-Encoding: chunked"],
    b"0\r\nX: y\r\n\r\nGET /cache/clear HTTP/1.1\r\nHost: x\r\n\r\n"))

# ----------------------------------------------------------------- chunked
CHUNKED = {
    "wikipedia_with_ext_and_trailer": b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT",
    "bare_lf": b"3\nabc\n0\n\n",
    "upper_hex": b"A\r\n0123456789\r\n0\r\n\r\n",
    "leading_zeros": b"0005\r\nhello\r\n000\r\n\r\n",
    "huge_size": b"ffffffffffffffff\r\n",
    "overflowing_size": b"fffffffffffffffff0\r\n",
    "signed_size": b"+5\r\nhello\r\n0\r\n\r\n",
    "spaces_around_size": b" 5 \r\nhello\r\n0\r\n\r\n",
    "data_longer_than_size": b"3\r\nabcd\r\n0\r\n\r\n",
    "missing_terminator": b"5\r\nhello\r\n",
    "empty_body": b"0\r\n\r\n",
    "many_trailers": b"0\r\n" + b"X-T: 1\r\n" * 20 + b"\r\n",
    "long_extension": b"1;" + b"e" * 5000 + b"\r\nx\r\n0\r\n\r\n",
    "json_body_in_chunks": b"7\r\n{\"model\r\n9\r\n\":\"gpt\"}\r\n0\r\n\r\n",
    # RFC 9112 chunk grammar, each refused or accepted as the head parser
    # would (issue 10): line ends, size, extensions, trailers, bounds.
    "bare_cr_in_size_line": b"3\rabc\r\n0\r\n\r\n",
    "bare_lf_after_data": b"3\r\nabc\n0\r\n\r\n",
    "bare_cr_after_data": b"3\r\nabc\r0\r\n\r\n",
    "bare_lf_last_chunk": b"3\r\nabc\r\n0\n\r\n",
    "tab_after_size": b"3\t\r\nabc\r\n0\r\n\r\n",
    "vt_before_size": b"\x0b3\r\nabc\r\n0\r\n\r\n",
    "ff_after_size": b"3\x0c\r\nabc\r\n0\r\n\r\n",
    "hex_prefix_size": b"0x3\r\nabc\r\n0\r\n\r\n",
    "seventeen_digit_size": b"00000000000000003\r\nabc\r\n0\r\n\r\n",
    "ext_bws_and_quoted_string": b"3 ; a = b ;c=\"q \\\" ;\"\r\nabc\r\n0;last\r\n\r\n",
    "ext_nul": b"3;a\x00b\r\nabc\r\n0\r\n\r\n",
    "ext_control_in_quoted": b"3;a=\"\x01\"\r\nabc\r\n0\r\n\r\n",
    "ext_bare_cr_in_quoted": b"3;a=\"x\ry\"\r\nabc\r\n0\r\n\r\n",
    "ext_unterminated_quote": b"3;a=\"abc\r\nabc\r\n0\r\n\r\n",
    "ext_without_name": b"3;=v\r\nabc\r\n0\r\n\r\n",
    "ext_trailing_space": b"3;a \r\nabc\r\n0\r\n\r\n",
    "ext_line_at_limit": b"1;a=" + b"x" * 4092 + b"\r\nx\r\n0\r\n\r\n",
    "ext_flood_on_small_chunks": (b"1;e=" + b"e" * 3000 + b"\r\nx\r\n") * 30 + b"0\r\n\r\n",
    "leading_zero_flood": b"0000000000000001\r\nx\r\n" * 4000 + b"0\r\n\r\n",
    "one_byte_chunks": b"1\r\nx\r\n" * 3000 + b"0\r\n\r\n",
    "trailer_obs_fold": b"0\r\nX-T: 1\r\n 2\r\n\r\n",
    "trailer_space_before_colon": b"0\r\nX-T : 1\r\n\r\n",
    "trailer_without_colon": b"0\r\nX-T\r\n\r\n",
    "trailer_nul_in_value": b"0\r\nX-T: a\x00b\r\n\r\n",
    "trailer_non_utf8_value": b"0\r\nX-T: \xff\xfe\r\n\r\n",
    "trailer_bare_lf": b"0\r\nX-T: 1\n\r\n",
    "trailer_missing_final_lf": b"0\r\nX-T: 1\r\n\rGET",
    "too_many_trailers": b"0\r\n" + b"X-T: 1\r\n" * 101 + b"\r\n",
}
for name, data in CHUNKED.items():
    put("chunked_body", name, data)

# ------------------------------------------------------- AWS event stream
def es_header(name, type_, value=b""):
    n = name.encode()
    return bytes([len(n)]) + n + bytes([type_]) + value


def es_string(name, text):
    v = text.encode()
    return es_header(name, 7, len(v).to_bytes(2, "big") + v)


def es_message(headers, payload):
    h = b"".join(headers)
    total = 16 + len(h) + len(payload)
    prelude = total.to_bytes(4, "big") + len(h).to_bytes(4, "big")
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    body = prelude + h + payload
    return body + zlib.crc32(body).to_bytes(4, "big")


def es_event(kind, payload):
    return es_message([es_string(":message-type", "event"), es_string(":event-type", kind),
                       es_string(":content-type", "application/json")],
                      json.dumps(payload).encode())


KIRO_ANSWER = b"".join([
    es_event("assistantResponseEvent", {"content": "Hello"}),
    es_event("assistantResponseEvent", {"content": ", world"}),
    es_event("toolUseEvent", {"name": "get_weather", "toolUseId": "t1", "input": "{\"city\""}),
    es_event("toolUseEvent", {"name": "get_weather", "toolUseId": "t1", "input": ":\"Paris\"}",
                              "stop": True}),
    es_event("meteringEvent", {"unit": "credit", "usage": 0.02}),
])
EVERY_TYPE = es_message([
    es_header("t", 0), es_header("f", 1), es_header("b", 2, b"\xfe"),
    es_header("s", 3, (-300).to_bytes(2, "big", signed=True)),
    es_header("i", 4, (70000).to_bytes(4, "big")),
    es_header("l", 5, (-5_000_000_000).to_bytes(8, "big", signed=True)),
    es_header("by", 6, b"\x00\x03\x00\x01\xff"), es_string("st", "h\u00e9llo"),
    es_header("ts", 8, (1_700_000_000_000).to_bytes(8, "big")),
    es_header("u", 9, bytes(range(16)))], b"{}")
EXCEPTION = es_message([es_string(":message-type", "exception"),
                        es_string(":exception-type", "ValidationException")],
                       b'{"message":"Input is too long."}')
# The first byte is the target's control byte: bit 0 repairs CRCs.
put("aws_eventstream", "kiro_answer", b"\x00" + KIRO_ANSWER)
put("aws_eventstream", "kiro_answer_truncated", b"\x02" + KIRO_ANSWER[:-7])
put("aws_eventstream", "every_header_type", b"\x04" + EVERY_TYPE)
put("aws_eventstream", "exception", b"\x06" + EXCEPTION)
put("aws_eventstream", "aws_empty_message", b"\x08" + es_message([], b""))
put("aws_eventstream", "bad_message_crc", b"\x0a" + KIRO_ANSWER[:-1] + b"\x00")
put("aws_eventstream", "crcs_repaired_unknown_type", b"\x01" + es_message([es_header("x", 42)], b""))
put("aws_eventstream", "crcs_repaired_header_overrun", b"\x03" + es_message([b"\x09abc"], b""))

# -------------------------------------------------------------- ws_message
# One client text message of the WebSocket API (the target frames it).
WS_CHAT = {"messages": [{"role": "user", "content": "Hello!"}]}
WS = {
    "feature_guide_request": {"type": "request", "id": "123", "provider": "openai-custom",
                              "model": "gpt-3.5-turbo", "request": WS_CHAT,
                              "metadata": {"stream": True}},
    "anthropic_request": {"type": "request", "id": 7, "model": "claude-x",
                          "request": {"max_tokens": 64, **WS_CHAT},
                          "metadata": {"protocol": "anthropic"}},
    "gemini_request": {"type": "request", "id": "g", "model": "gemini-2.5-flash",
                       "request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
                       "metadata": {"protocol": "gemini", "stream": False}},
    "responses_request": {"type": "request", "id": "r", "request": {"model": "m", "input": "hi"},
                          "metadata": {"protocol": "responses"}},
    "batch": {"type": "batch", "requests": [
        {"type": "request", "id": "1", "request": WS_CHAT},
        {"id": "2", "request": WS_CHAT},
        {"type": "request", "request": WS_CHAT},
        {"type": "request", "id": "1", "request": WS_CHAT},
        {"type": "heartbeat"}, 5]},
    "cancel": {"type": "cancel", "id": "123"},
    "heartbeat": {"type": "heartbeat"},
    "unknown_type": {"type": "subscribe", "id": "x"},
    "missing_id": {"type": "request", "request": WS_CHAT},
    "bad_protocol": {"type": "request", "id": "p", "request": {}, "metadata": {"protocol": "soap"}},
    "bad_id": {"type": "request", "id": [1], "request": {}},
}
for name, message in WS.items():
    put("ws_message", name, json.dumps(message))
put("ws_message", "not_json", "{type: request")
put("ws_message", "not_utf8", b'{"type":"heartbeat","x":"\xff\xfe"}')
put("ws_message", "duplicate_keys", '{"type":"request","type":"cancel","id":"a","request":{}}')
put("ws_message", "deep_request", '{"type":"request","id":"d","request":{"a":' + "[" * 300 + "]" * 300 + "}}")

# ------------------------------------------------------- cluster heartbeats
# The layout of src/cluster/codec.rs; the first byte is the target's
# control byte: bit 0 signs the rest (so a body reaches the parser), the
# other bits pick the bit the target flips.
CLUSTER_SECRET = b"aiproxy fuzz cluster secret"


def hb_str(s):
    s = s.encode() if isinstance(s, str) else s
    return bytes([len(s)]) + s


def hb_body(node, inc, seq, items, page=0, pages=1, version=1, kind=1):
    head = b"AIPC" + bytes([version, kind, page, pages])
    return head + inc.to_bytes(8, "big") + seq.to_bytes(8, "big") + hb_str(node) + b"".join(items)


def hb_member(node, ip, port, inc, state, age_ms):
    addr = bytes([4]) + bytes(ip) if len(ip) == 4 else bytes([6]) + bytes(ip)
    return (b"\x01" + hb_str(node) + addr + port.to_bytes(2, "big") + inc.to_bytes(8, "big")
            + bytes([state]) + age_ms.to_bytes(4, "big"))


def hb_setting(name, value, clock, node):
    return b"\x02" + hb_str(name) + hb_str(value) + clock.to_bytes(8, "big") + hb_str(node)


def hb_clear(clock, node):
    return b"\x03" + clock.to_bytes(8, "big") + hb_str(node)


def hb_signed(body):
    return body + hmac.new(CLUSTER_SECRET, body, hashlib.sha256).digest()


HB_FULL = hb_body("node1", 1_795_705_660_000, 42, [
    hb_setting("load_balancer.algorithm", "least_requests", 1_795_705_660_123, "node2"),
    hb_setting("cache.enabled", "false", 1_795_705_660_124, "node3"),
    hb_clear(1_795_705_660_125, "node2"),
    hb_member("node2", [192, 168, 1, 11], 3000, 1_795_705_650_000, 0, 250),
    hb_member("node3", [0xfe, 0x80] + [0] * 13 + [1], 3000, 7, 1, 3_500),
    hb_member("node4", [10, 0, 0, 4], 3000, 9, 2, 12_000),
])
HB_MANY = hb_body("n" * 64, 5, 6, [hb_member(f"{i:0>64}", [10, 0, 0, 1], 3000, i, 0, i)
                                   for i in range(13)], page=1, pages=3)
put("cluster_datagram", "heartbeat_signed", b"\x00" + hb_signed(HB_FULL))
put("cluster_datagram", "heartbeat_empty_signed", b"\x02" + hb_signed(hb_body("a", 1, 1, [])))
put("cluster_datagram", "heartbeat_body", b"\x01" + HB_FULL)
put("cluster_datagram", "heartbeat_full_page_body", b"\x03" + HB_MANY)
put("cluster_datagram", "heartbeat_wrong_secret",
    b"\x00" + HB_FULL + hmac.new(b"another secret", HB_FULL, hashlib.sha256).digest())
put("cluster_datagram", "heartbeat_version_2", b"\x00" + hb_signed(hb_body("a", 1, 1, [], version=2)))
put("cluster_datagram", "heartbeat_bad_state_body",
    b"\x01" + hb_body("a", 1, 1, [hb_member("b", [1, 2, 3, 4], 1, 1, 3, 0)]))
put("cluster_datagram", "heartbeat_bad_setting_body",
    b"\x01" + hb_body("a", 1, 1, [hb_setting("Bad Name", "v", 1, "b")]))
put("cluster_datagram", "heartbeat_truncated_item_body", b"\x01" + HB_FULL[:-3])
put("cluster_datagram", "not_a_heartbeat", b"\x00GET / HTTP/1.1\r\n\r\n")

# Upstream answers as the plain-HTTP client reads them: heads, interim
# answers, every body framing, and the refusals.
OK_JSON = b'{"id":"chatcmpl-1","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}'
SSE = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
for name, data in {
    "length": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (len(OK_JSON), OK_JSON),
    "length_zero": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "no_content": b"HTTP/1.1 204 No Content\r\n\r\n",
    "chunked_sse": b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"%x\r\n%s\r\n" % (len(SSE), SSE) + b"0\r\n\r\n",
    "chunked_ext_trailer": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                           b"5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    "chunked_bare_lf": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
    "until_close": b"HTTP/1.0 200 OK\r\n\r\nthe rest",
    "other_coding_until_close": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabcdef",
    "interim_then_429": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
                        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nslow",
    "conflicting_lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    "unexpected_101": b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    "chunk_longer_than_size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
    "cut_short": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
}.items():
    put("upstream_answer", name, data)

for t in sorted(os.listdir(OUT)):
    print(f"{t}: {len(os.listdir(os.path.join(OUT, t)))} files")
