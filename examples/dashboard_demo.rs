//! Serves the metrics dashboard with synthetic traffic, for looking at the
//! page (and screenshotting it) without the gateway:
//!
//! ```text
//! cargo run --example dashboard_demo -- 127.0.0.1:9898
//! ```
//!
//! Routes: `GET /dashboard`, `GET /dashboard/summary.json`, `GET /metrics`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use aiproxy::metrics::{self, ErrorKind, Metrics, MetricsOptions, NodeState};
use aiproxy::providers::ProviderKind;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9898".into());
    let m = Metrics::with_options(MetricsOptions {
        providers: vec![
            ProviderKind::OpenAiCustom,
            ProviderKind::ClaudeCustom,
            ProviderKind::Mock,
        ],
        websocket: true,
        load_balancer: true,
        cluster: true,
        redis: true,
        ..MetricsOptions::default()
    });
    let traffic = Arc::clone(&m);
    thread::spawn(move || synthetic_traffic(&traffic));
    let listener = TcpListener::bind(&addr).expect("bind");
    eprintln!(
        "dashboard on http://{}/dashboard",
        listener.local_addr().unwrap()
    );
    for stream in listener.incoming().flatten() {
        let m = Arc::clone(&m);
        thread::spawn(move || {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                return;
            }
            let mut accept = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':')
                    && k.eq_ignore_ascii_case("accept")
                {
                    accept = Some(v.trim().to_owned());
                }
            }
            let path = line.split(' ').nth(1).unwrap_or("/");
            let (status, ct, body) = match path {
                "/dashboard" | "/dashboard/" => (
                    "200 OK",
                    metrics::DASHBOARD_CONTENT_TYPE,
                    metrics::DASHBOARD_HTML.to_owned(),
                ),
                "/dashboard/summary.json" => {
                    ("200 OK", "application/json", m.summary().to_string())
                }
                "/metrics" => {
                    let (ct, body) = m.encode(accept.as_deref());
                    ("200 OK", ct, body)
                }
                _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
            };
            let mut out = &stream;
            let _ = write!(
                out,
                "HTTP/1.1 {status}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
    }
}

/// A few requests a second with a wave in them, occasional errors.
fn synthetic_traffic(m: &Metrics) {
    let providers = [
        (ProviderKind::OpenAiCustom, "gpt-4o", "openai-custom-0"),
        (
            ProviderKind::ClaudeCustom,
            "claude-sonnet-4",
            "claude-custom-0",
        ),
        (ProviderKind::Mock, "mock-model", "mock-0"),
    ];
    for (kind, _, id) in providers {
        m.set_instance_healthy(kind, id, true);
    }
    m.set_instance_healthy(ProviderKind::OpenAiCustom, "openai-custom-1", false);
    m.set_cluster_nodes(NodeState::Alive, 3);
    m.set_cluster_nodes(NodeState::Suspect, 1);
    m.set_cache_redis_up(true);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 10_000) as f64 / 10_000.0
    };
    let mut tick: u64 = 0;
    let mut cache_bytes = 0u64;
    loop {
        tick += 1;
        let wave = 1.0 + (tick as f64 / 40.0).sin();
        let n = (3.0 + 5.0 * wave * rand()) as usize;
        for _ in 0..n {
            let (kind, model, id) = providers[(rand() * 3.0) as usize % 3];
            let _guard = m.active_guard();
            if rand() < 0.3 {
                m.cache_hit();
                m.http_request(
                    "/v1/chat/completions",
                    "POST",
                    200,
                    Duration::from_micros(400),
                );
                continue;
            }
            m.cache_miss();
            cache_bytes += 2048;
            let secs = 0.05 + rand() * rand() * 3.0 * wave;
            m.provider_request(kind, model, id);
            m.provider_latency(kind, Duration::from_secs_f64(secs));
            m.time_to_first_token(kind, Duration::from_secs_f64(secs / 4.0));
            let status = if rand() < 0.03 {
                m.provider_error(kind, ErrorKind::Status5xx);
                502
            } else {
                m.tokens(
                    kind,
                    model,
                    20 + (rand() * 400.0) as u64,
                    10 + (rand() * 800.0) as u64,
                );
                200
            };
            m.http_request(
                "/v1/chat/completions",
                "POST",
                status,
                Duration::from_secs_f64(secs + 0.002),
            );
        }
        m.set_cache_size_bytes(cache_bytes);
        m.set_websocket_connections(10 + (wave * 6.0) as i64);
        thread::sleep(Duration::from_millis(500));
    }
}
