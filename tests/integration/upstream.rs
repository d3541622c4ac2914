//! A scripted mock upstream on a real loopback socket: records every
//! request and answers with whatever the test scripted, including slow
//! and broken answers.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// What the upstream answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Status, extra header lines, body.
    Json(u16, Vec<(String, String)>, String),
    /// SSE events, each sent after its delay.
    Sse(Vec<(Duration, String)>),
    /// Wait, then close without answering.
    Hang(Duration),
}

type Script = Box<dyn Fn(usize, &Recorded) -> Reply + Send + Sync>;

pub struct MockUpstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    hits: Arc<AtomicUsize>,
    /// Receives a message when a streamed answer could not be written
    /// because the client (aiproxy) closed the connection.
    pub client_gone: Receiver<()>,
}

impl MockUpstream {
    pub fn start(
        script: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static,
    ) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (gone_tx, client_gone) = crossbeam_channel::unbounded();
        let script: Arc<Script> = Arc::new(Box::new(script));
        {
            let requests = requests.clone();
            let hits = hits.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let (requests, hits, script, gone) = (
                        requests.clone(),
                        hits.clone(),
                        script.clone(),
                        gone_tx.clone(),
                    );
                    thread::spawn(move || serve(stream, &requests, &hits, &script, &gone));
                }
            });
        }
        MockUpstream {
            addr,
            requests,
            hits,
            client_gone,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }
}

fn serve(
    mut stream: TcpStream,
    requests: &Mutex<Vec<Recorded>>,
    hits: &AtomicUsize,
    script: &Script,
    gone: &Sender<()>,
) {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    // Head and body are separate writes: avoid the delayed-ACK stall.
    stream.set_nodelay(true).ok();
    loop {
        let Some(req) = read_request(&mut stream) else {
            return;
        };
        let n = hits.fetch_add(1, Ordering::SeqCst);
        requests.lock().unwrap().push(req.clone());
        match script(n, &req) {
            Reply::Json(status, headers, body) => {
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if stream.write_all(head.as_bytes()).is_err()
                    || stream.write_all(body.as_bytes()).is_err()
                {
                    return;
                }
            }
            Reply::Sse(events) => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for (delay, event) in events {
                    thread::sleep(delay);
                    if stream
                        .write_all(event.as_bytes())
                        .and_then(|()| stream.flush())
                        .is_err()
                    {
                        let _ = gone.send(());
                        return;
                    }
                }
                return;
            }
            Reply::Hang(d) => {
                thread::sleep(d);
                return;
            }
        }
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}

/// An OpenAI chat completion answer.
pub fn openai_completion(text: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    })
    .to_string()
}

/// OpenAI SSE chunks for `words`, then finish and `[DONE]`.
pub fn openai_stream(words: &[&str], gap: Duration) -> Vec<(Duration, String)> {
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let delta = if i == 0 {
            serde_json::json!({"role": "assistant", "content": w})
        } else {
            serde_json::json!({"content": w})
        };
        let chunk = serde_json::json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-test", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
        out.push((
            if i == 0 { Duration::ZERO } else { gap },
            format!("data: {chunk}\n\n"),
        ));
    }
    let last = serde_json::json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-test", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": words.len()}});
    out.push((gap, format!("data: {last}\n\n")));
    out.push((Duration::ZERO, "data: [DONE]\n\n".to_owned()));
    out
}
