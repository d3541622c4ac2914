//! The built-in offline provider.
//!
//! It speaks the OpenAI family (so every client protocol reaches it
//! through the same converters as a real upstream) and answers
//! deterministically: text derived from the prompt, usage counts, a tool
//! call when tools are offered and `tool_choice` allows one, and streams
//! with a configurable pause between chunks. With it, `aiproxy
//! --model-provider mock` works on a machine with no keys and no network.
//!
//! Coding agents offer dozens of tools with every request, so when the
//! tools include a file reader (see [`read_tool`]) the mock plays a short
//! agent session instead: it reads the absolute path named in the prompt
//! (the last text of the last user message) with one call of that tool,
//! then answers with the start of the result; with no path in the prompt,
//! it answers in text.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{Probe, Provider, UpstreamError, UpstreamRequest, UpstreamResponse, read_wait};
use crate::protocol::ModelInfo;

/// Models the mock lists; it answers any model name.
pub const MODELS: &[&str] = &["mock-small", "mock-large"];

const LOREM: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor";

/// The mock provider.
pub struct Mock {
    chunk_delay: Duration,
    latency: Duration,
    counter: AtomicU64,
}

impl Mock {
    /// A mock that waits `latency` before answering and `chunk_delay`
    /// between streamed chunks.
    pub fn new(chunk_delay: Duration, latency: Duration) -> Self {
        Self {
            chunk_delay,
            latency,
            counter: AtomicU64::new(0),
        }
    }
}

impl Provider for Mock {
    fn call(&self, req: &UpstreamRequest<'_>) -> Result<UpstreamResponse, UpstreamError> {
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => return Ok(error(400, &format!("invalid JSON: {e}"))),
        };
        if !self.latency.is_zero() {
            thread::sleep(self.latency);
        }
        let model = body["model"].as_str().unwrap_or(&req.model).to_owned();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let answer = Answer::for_request(&body);
        let id = format!("chatcmpl-mock{n:08x}");
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if req.stream {
            let include_usage = body["stream_options"]["include_usage"]
                .as_bool()
                .unwrap_or(false);
            let chunks = answer.stream_chunks(&id, created, &model, include_usage);
            return Ok(UpstreamResponse {
                status: 200,
                retry_after: None,
                content_length: None,
                body: Box::new(DelayedChunks::new(chunks, self.chunk_delay)),
            });
        }
        let bytes =
            serde_json::to_vec(&answer.completion(&id, created, &model)).unwrap_or_default();
        Ok(UpstreamResponse {
            status: 200,
            retry_after: None,
            content_length: Some(bytes.len() as u64),
            body: Box::new(io::Cursor::new(bytes)),
        })
    }

    fn probe(&self, _timeout: Duration) -> Probe {
        Probe::Answered(200)
    }

    fn models(&self) -> Result<Vec<ModelInfo>, UpstreamError> {
        Ok(MODELS
            .iter()
            .map(|id| ModelInfo {
                id: (*id).to_owned(),
                owned_by: "aiproxy".into(),
                display_name: Some(format!("aiproxy {id}")),
            })
            .collect())
    }
}

fn error(status: u16, message: &str) -> UpstreamResponse {
    let body =
        json!({"error": {"message": message, "type": "invalid_request_error", "code": null}});
    UpstreamResponse {
        status,
        retry_after: None,
        content_length: None,
        body: Box::new(io::Cursor::new(body.to_string().into_bytes())),
    }
}

/// What the mock answers to one request.
#[derive(Debug, PartialEq)]
enum Reply {
    Text(Vec<String>),
    ToolCall { name: String, arguments: String },
}

#[derive(Debug)]
struct Answer {
    reply: Reply,
    prompt_tokens: u64,
    truncated: bool,
}

impl Answer {
    fn for_request(body: &Value) -> Answer {
        let messages = body["messages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let prompt_chars: usize = messages.iter().map(|m| text_of(&m["content"]).len()).sum();
        let prompt_tokens = (prompt_chars as u64).div_ceil(4).max(1);
        if let Some((name, arguments)) = tool_to_call(body, messages) {
            return Answer {
                reply: Reply::ToolCall { name, arguments },
                prompt_tokens,
                truncated: false,
            };
        }
        // In an agent session the answer quotes the file read.
        let agent = body["tools"]
            .as_array()
            .is_some_and(|t| read_tool(t).is_some() || shell_tool(t).is_some());
        // A tool's output may open with a header of its own (Codex's shell
        // tool: chunk id, wall time, exit code), so more of it is quoted.
        let (last_user, quoted) = match latest_tool_result(messages).filter(|_| agent) {
            Some(result) => (text_of(&result["content"]), 32),
            None => (last_user_text(messages), 8),
        };
        let snippet: String = last_user
            .split_whitespace()
            .take(quoted)
            .collect::<Vec<_>>()
            .join(" ");
        let mut words: Vec<String> = vec!["Mock".into(), "answer".into(), "to".into()];
        words.push(format!(
            "\"{}\":",
            if snippet.is_empty() {
                "(empty prompt)"
            } else {
                &snippet
            }
        ));
        words.extend(LOREM.split(' ').map(str::to_owned));
        let limit = body["max_tokens"]
            .as_u64()
            .or_else(|| body["max_completion_tokens"].as_u64())
            .map_or(usize::MAX, |n| n.max(1) as usize);
        let truncated = words.len() > limit;
        words.truncate(limit);
        Answer {
            reply: Reply::Text(words),
            prompt_tokens,
            truncated,
        }
    }

    fn completion_tokens(&self) -> u64 {
        match &self.reply {
            Reply::Text(words) => words.len() as u64,
            Reply::ToolCall { arguments, .. } => (arguments.len() as u64).div_ceil(4).max(1),
        }
    }

    fn finish_reason(&self) -> &'static str {
        match self.reply {
            Reply::ToolCall { .. } => "tool_calls",
            Reply::Text(_) if self.truncated => "length",
            Reply::Text(_) => "stop",
        }
    }

    fn usage(&self) -> Value {
        let c = self.completion_tokens();
        json!({"prompt_tokens": self.prompt_tokens, "completion_tokens": c, "total_tokens": self.prompt_tokens + c})
    }

    fn completion(&self, id: &str, created: u64, model: &str) -> Value {
        let message = match &self.reply {
            Reply::Text(words) => json!({"role": "assistant", "content": words.join(" ")}),
            Reply::ToolCall { name, arguments } => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{"id": format!("call_{id}"), "type": "function",
                                "function": {"name": name, "arguments": arguments}}]
            }),
        };
        json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason()}],
            "usage": self.usage(),
        })
    }

    fn stream_chunks(
        &self,
        id: &str,
        created: u64,
        model: &str,
        include_usage: bool,
    ) -> Vec<Vec<u8>> {
        let chunk = |delta: Value, finish: Option<&str>| {
            let v = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            format!("data: {v}\n\n").into_bytes()
        };
        let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        match &self.reply {
            Reply::Text(words) => {
                for (i, word) in words.iter().enumerate() {
                    let text = if i == 0 {
                        word.clone()
                    } else {
                        format!(" {word}")
                    };
                    out.push(chunk(json!({"content": text}), None));
                }
            }
            Reply::ToolCall { name, arguments } => {
                let (head, tail) = arguments.split_at(arguments.len() / 2);
                out.push(chunk(
                    json!({"tool_calls": [{"index": 0, "id": format!("call_{id}"), "type": "function",
                                           "function": {"name": name, "arguments": head}}]}),
                    None,
                ));
                out.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": tail}}]}),
                    None,
                ));
            }
        }
        out.push(chunk(json!({}), Some(self.finish_reason())));
        if include_usage {
            let v = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [], "usage": self.usage()});
            out.push(format!("data: {v}\n\n").into_bytes());
        }
        out.push(b"data: [DONE]\n\n".to_vec());
        out
    }
}

/// The tool to call, with arguments, when the request offers tools, allows
/// a call and is not already answering one. A file reader among the tools
/// is called once per conversation, for the path the prompt names.
fn tool_to_call(body: &Value, messages: &[Value]) -> Option<(String, String)> {
    let tools = body["tools"].as_array().filter(|t| !t.is_empty())?;
    let choice = &body["tool_choice"];
    if choice == "none" {
        return None;
    }
    let reader = read_tool(tools)
        .map(|(name, param)| (name, param, false))
        .or_else(|| shell_tool(tools).map(|(name, param)| (name, param, true)));
    if let Some((name, param, shell)) = reader {
        if messages.iter().any(|m| m["role"] == "tool") {
            return None;
        }
        // The prompt is the last text: agents put their context first.
        let prompt = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .and_then(|m| match &m["content"] {
                Value::Array(parts) => parts.iter().rev().find_map(|p| p["text"].as_str()),
                other => other.as_str(),
            })?;
        let path = last_path(prompt)?;
        let argument = if shell { format!("cat {path}") } else { path };
        return Some((name.to_owned(), json!({ param: argument }).to_string()));
    }
    if messages.last().is_some_and(|m| m["role"] == "tool") {
        return None;
    }
    let wanted = choice["function"]["name"].as_str();
    let tool = tools
        .iter()
        .find(|t| wanted.is_none_or(|w| function(t).0 == Some(w)))
        .or_else(|| tools.first())?;
    let (name, params) = function(tool);
    let mut args = serde_json::Map::new();
    if let Some(props) = params["properties"].as_object() {
        for (key, schema) in props {
            args.insert(key.clone(), example_value(key, schema));
        }
    }
    Some((name?.to_owned(), Value::Object(args).to_string()))
}

/// Name and parameter schema of a function tool, nested as in chat
/// completions (`{"function": {…}}`) or flat as in the Responses API.
fn function(tool: &Value) -> (Option<&str>, &Value) {
    let f = tool.get("function").unwrap_or(tool);
    (f["name"].as_str(), &f["parameters"])
}

/// The agents' file reader among `tools`, with its path parameter: a
/// tool named like `Read`, `read_file` or `ReadFile` whose parameters
/// include one named like `file_path`, `absolute_path` or `path` (Claude
/// Code's `Read`, Gemini CLI's `read_file`).
pub fn read_tool(tools: &[Value]) -> Option<(&str, &str)> {
    tools.iter().find_map(|t| {
        let (name, params) = function(t);
        let name = name?;
        let squashed: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if !matches!(squashed.as_str(), "read" | "readfile" | "readtextfile") {
            return None;
        }
        let param = params["properties"]
            .as_object()?
            .keys()
            .find(|k| k.to_ascii_lowercase().contains("path"))?;
        Some((name, param.as_str()))
    })
}

/// An agent's shell among `tools`, with its command parameter, for agents
/// that read files through it (Codex CLI's `exec_command` with `cmd`).
pub fn shell_tool(tools: &[Value]) -> Option<(&str, &str)> {
    tools.iter().find_map(|t| {
        let (name, params) = function(t);
        let name = name?;
        if !matches!(name, "exec_command" | "shell" | "local_shell") {
            return None;
        }
        let param = params["properties"]
            .as_object()?
            .iter()
            .find(|(k, v)| matches!(k.as_str(), "cmd" | "command") && v["type"] == "string")?
            .0;
        Some((name, param.as_str()))
    })
}

/// The last absolute path in `text`, without the punctuation around it.
fn last_path(text: &str) -> Option<String> {
    text.split_whitespace()
        .rev()
        .map(|w| {
            w.trim_start_matches(|c: char| "`'\"([<".contains(c))
                .trim_end_matches(|c: char| "`'\")]>,;:.?!".contains(c))
        })
        .find(|w| w.len() > 1 && w.starts_with('/'))
        .map(str::to_owned)
}

/// Text of the last user message.
fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| text_of(&m["content"]))
        .unwrap_or_default()
}

/// The last tool result given since the model last spoke.
fn latest_tool_result(messages: &[Value]) -> Option<&Value> {
    messages
        .iter()
        .rev()
        .take_while(|m| m["role"] != "assistant")
        .find(|m| m["role"] == "tool")
}

fn example_value(key: &str, schema: &Value) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    match schema["type"].as_str().unwrap_or("string") {
        "integer" | "number" => json!(1),
        "boolean" => json!(true),
        "array" => json!([]),
        "object" => json!({}),
        _ => json!(format!("mock-{key}")),
    }
}

/// Text of an OpenAI `content`: a string or an array of parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A reader that yields prepared chunks, pausing before each but the first
/// as a model producing tokens would. Like a body from the network, it
/// respects the thread's [`read_wait`](super::read_wait): a pause longer
/// than the wait fails the read with `TimedOut`, and the next read waits
/// for the rest of it.
struct DelayedChunks {
    chunks: VecDeque<Vec<u8>>,
    current: io::Cursor<Vec<u8>>,
    delay: Duration,
    started: bool,
    /// When the next chunk is due, once a read has started waiting for it.
    due: Option<Instant>,
}

impl DelayedChunks {
    fn new(chunks: Vec<Vec<u8>>, delay: Duration) -> Self {
        Self {
            chunks: chunks.into(),
            current: io::Cursor::new(Vec::new()),
            delay,
            started: false,
            due: None,
        }
    }
}

impl Read for DelayedChunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let wait = read_wait::current();
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            if self.chunks.is_empty() {
                return Ok(0);
            }
            if self.started && !self.delay.is_zero() {
                let due = *self.due.get_or_insert_with(|| Instant::now() + self.delay);
                let left = due.saturating_duration_since(Instant::now());
                match wait {
                    Some(wait) if wait < left => {
                        thread::sleep(wait);
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    _ => thread::sleep(left),
                }
            }
            self.due = None;
            self.started = true;
            self.current = io::Cursor::new(self.chunks.pop_front().unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Like a network body, a paced mock stream gives up a read after the
    /// thread's wait and loses nothing: the relay sends keep-alives then.
    #[test]
    fn paced_chunks_respect_the_read_wait() {
        let mut body = DelayedChunks::new(
            vec![b"a".to_vec(), b"b".to_vec()],
            Duration::from_millis(200),
        );
        let wait = read_wait::ReadWait::start(Duration::from_millis(20));
        let mut buf = [0u8; 8];
        assert_eq!(body.read(&mut buf).unwrap(), 1);
        let e = body.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(wait.honoured());
        wait.set(Duration::from_secs(5));
        assert_eq!(body.read(&mut buf).unwrap(), 1);
        assert_eq!(&buf[..1], b"b");
        assert_eq!(body.read(&mut buf).unwrap(), 0);
    }

    fn call(body: Value, stream: bool) -> Vec<u8> {
        let mock = Mock::new(Duration::ZERO, Duration::ZERO);
        let req = UpstreamRequest {
            model: "m".into(),
            body: body.to_string().into_bytes().into(),
            stream,
            forward_headers: vec![],
            timeout: None,
        };
        let mut out = Vec::new();
        mock.call(&req).unwrap().body.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn answers_deterministically_from_the_prompt() {
        let req = json!({"model": "mock-small", "messages": [{"role": "user", "content": "Hello there"}]});
        let a: Value = serde_json::from_slice(&call(req.clone(), false)).unwrap();
        let b: Value = serde_json::from_slice(&call(req, false)).unwrap();
        let text = a["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(text.contains("Hello there"));
        assert_eq!(text, b["choices"][0]["message"]["content"]);
        assert_eq!(a["choices"][0]["finish_reason"], "stop");
        assert!(a["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    }

    #[test]
    fn calls_an_offered_tool_unless_forbidden() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
        let req = json!({"model": "m", "messages": [{"role": "user", "content": "weather?"}], "tools": tools});
        let a: Value = serde_json::from_slice(&call(req, false)).unwrap();
        let call0 = &a["choices"][0]["message"]["tool_calls"][0]["function"];
        assert_eq!(call0["name"], "get_weather");
        assert_eq!(call0["arguments"], r#"{"city":"mock-city"}"#);
        let none = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": "none"});
        let b: Value = serde_json::from_slice(&call(none, false)).unwrap();
        assert!(b["choices"][0]["message"]["tool_calls"].is_null());
    }

    #[test]
    fn reads_the_file_the_prompt_names_once() {
        // Claude Code's Read (chat shape) and Gemini CLI's read_file
        // (Responses' flat shape), among other tools.
        let claude = json!([
            {"type": "function", "function": {"name": "Bash", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "Read", "parameters": {"type": "object", "properties": {"file_path": {"type": "string"}, "limit": {"type": "integer"}}}}}]);
        let gemini = json!([
            {"type": "function", "name": "read_file", "parameters": {"type": "object", "properties": {"file_path": {"type": "string"}}}}]);
        assert_eq!(
            read_tool(claude.as_array().unwrap()),
            Some(("Read", "file_path"))
        );
        assert_eq!(
            read_tool(gemini.as_array().unwrap()),
            Some(("read_file", "file_path"))
        );
        let codex = json!([
            {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}, "workdir": {"type": "string"}}}}]);
        assert_eq!(read_tool(codex.as_array().unwrap()), None);
        assert_eq!(
            shell_tool(codex.as_array().unwrap()),
            Some(("exec_command", "cmd"))
        );
        let ask = json!({"role": "user", "content": [
            {"type": "text", "text": "<context>cwd /tmp/w</context>"},
            {"type": "text", "text": "Read the file `/tmp/w/notes.txt`."}]});
        let req = json!({"model": "m", "messages": [ask], "tools": claude});
        let a: Value = serde_json::from_slice(&call(req, false)).unwrap();
        let call0 = &a["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call0["function"]["name"], "Read");
        assert_eq!(
            call0["function"]["arguments"],
            r#"{"file_path":"/tmp/w/notes.txt"}"#
        );
        // The result came back (followed by more user text): the answer
        // quotes it, and nothing is read again.
        let id = call0["id"].clone();
        let req = json!({"model": "m", "tools": claude, "messages": [ask,
            {"role": "assistant", "content": null, "tool_calls": [call0]},
            {"role": "tool", "tool_call_id": id, "content": "1\tfile-token-42"},
            {"role": "user", "content": "<reminder>"}]});
        let text = String::from_utf8(call(req, true)).unwrap();
        assert!(text.contains("file-token-42"), "{text}");
        assert!(!text.contains("tool_calls"), "{text}");
        // No path in the prompt: a text answer, not a guess.
        let req =
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": gemini});
        let c: Value = serde_json::from_slice(&call(req, false)).unwrap();
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn streams_sse_ending_in_done() {
        let req =
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3});
        let text = String::from_utf8(call(req, true)).unwrap();
        assert!(text.starts_with("data: {"));
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert!(text.contains(r#""finish_reason":"length""#));
    }
}
