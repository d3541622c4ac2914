//! What a client without a key can learn or change, and what a reload may
//! not weaken: `/health` detail, model names in `/metrics`, provider
//! prefixes on operational routes, echoed paths, the `Bearer` scheme, and
//! SIGHUP reloads against the running listener (the `aiproxy` binary).

#[path = "common/ports.rs"]
mod ports;
#[path = "integration/support.rs"]
mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aiproxy::config::{LogLevel, Secret};
use aiproxy::providers::ProviderKind;
use aiproxy::{Config, Handle};
use ports::free_port;
use serde_json::Value;
use support::{Response, get, post_json, roundtrip};

const KEY: &str = "sec-key";
const AUTH: &str = "Authorization: Bearer sec-key\r\n";

struct Proxy(Option<Handle>);

impl Proxy {
    fn start(tweak: impl FnOnce(&mut Config)) -> Proxy {
        let defaults = Config::default();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            workers: 4,
            api_keys: vec![Secret::new(KEY)],
            log: aiproxy::config::LogConfig {
                level: LogLevel::Error,
                ..defaults.log.clone()
            },
            ..defaults
        };
        tweak(&mut config);
        Proxy(Some(aiproxy::start(config).expect("start")))
    }

    fn addr(&self) -> SocketAddr {
        self.0.as_ref().unwrap().addr()
    }

    fn get(&self, path: &str, headers: &str) -> Response {
        roundtrip(
            self.addr(),
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n")
                .as_bytes(),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.shutdown();
        }
    }
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("aiproxy-sec-{}-{name}", std::process::id()))
}

fn keys_of(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

#[test]
fn health_without_a_key_says_status_and_readiness_only() {
    let creds = temp_path("gemini-creds.json");
    std::fs::write(
        &creds,
        r#"{"access_token":"a","refresh_token":"r","expiry_date":1}"#,
    )
    .unwrap();
    let p = Proxy::start(|c| {
        c.model_providers = vec![ProviderKind::Mock, ProviderKind::GeminiCli];
        c.gemini.oauth_creds_file = Some(creds.clone());
        c.gemini.project_id = Some("p".into());
    });
    let creds_text = creds.to_str().unwrap();

    for headers in ["", "Authorization: Bearer wrong\r\n"] {
        let open = p.get("/health", headers);
        assert_eq!(open.status, 200);
        assert_eq!(
            keys_of(&open.json()),
            ["ready", "status"],
            "{}",
            open.text()
        );
        assert_eq!(open.json()["status"], "healthy");
        assert_eq!(open.json()["ready"], true);
        assert!(!open.text().contains(creds_text), "{}", open.text());
    }

    let detailed = p.get("/health", AUTH);
    assert_eq!(detailed.status, 200);
    let body = detailed.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["provider"], "mock");
    let gemini = &body["providers"][1]["instances"][0]["credentials"];
    assert_eq!(gemini["credentials_file"], creds_text, "{body}");
    let _ = std::fs::remove_file(&creds);
}

#[test]
fn health_without_configured_keys_keeps_its_details() {
    let p = Proxy::start(|c| c.api_keys.clear());
    let body = p.get("/health", "").json();
    assert_eq!(body["providers"][0]["provider"], "mock", "{body}");
}

#[test]
fn metrics_and_dashboard_never_show_a_client_chosen_model_name() {
    let p = Proxy::start(|c| {
        c.model_routes
            .insert("routed-model".into(), ProviderKind::Mock);
    });
    let chat = |model: &str| {
        let body =
            format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
        let r = post_json(p.addr(), "/v1/chat/completions", AUTH, &body);
        assert_eq!(r.status, 200, "{}", r.text());
    };
    for i in 0..5 {
        chat(&format!("client-secret-model-{i}"));
    }
    chat("routed-model");
    chat("mock-small");

    let metrics = p.get("/metrics", "").text();
    assert!(!metrics.contains("client-secret-model"), "{metrics}");
    assert!(metrics.contains(r#"model="other""#), "{metrics}");
    assert!(
        metrics.contains(r#"model="routed-model""#),
        "configured: {metrics}"
    );
    assert!(
        metrics.contains(r#"model="mock-small""#),
        "built in: {metrics}"
    );
    let summary = p.get("/dashboard/summary.json", "").text();
    assert!(!summary.contains("client-secret-model"), "{summary}");
}

#[test]
fn provider_prefixes_do_not_reach_operational_routes() {
    let p = Proxy::start(|_| {});
    for path in [
        "/mock/health",
        "/kiro-api/metrics",
        "/mock/dashboard",
        "/gemini-cli/dashboard/summary.json",
        "/mock/cache/stats",
    ] {
        for headers in ["", AUTH] {
            let r = p.get(path, headers);
            assert_eq!(r.status, 404, "{path} {headers:?}: {}", r.text());
        }
    }
    let r = roundtrip(
        p.addr(),
        format!("DELETE /mock/cache/clear HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{AUTH}\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 404);
    // Inference and model routes still take a prefix.
    assert_eq!(p.get("/mock/v1/models", AUTH).status, 200);
    assert_eq!(p.get("/health", "").status, 200);
}

#[test]
fn a_404_echoes_a_bounded_escaped_path() {
    let p = Proxy::start(|_| {});
    // Just under the default 32 KiB head limit.
    let long = format!("/{}", "a".repeat(30 * 1024));
    let r = p.get(&long, "");
    assert_eq!(r.status, 404);
    assert!(r.body.len() < 1024, "{} bytes", r.body.len());
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("no route for GET /aaa"), "{message}");
    assert!(message.ends_with("..."), "{message}");

    // Right-to-left override and other non-ASCII text is escaped.
    let r = get(p.addr(), "/x\u{202e}y\u{e9}");
    assert_eq!(r.status, 404);
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert_eq!(message, r"no route for GET /x\u{202e}y\u{e9}");
}

#[test]
fn bearer_scheme_is_matched_case_insensitively() {
    let p = Proxy::start(|_| {});
    let chat = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let header = format!("Authorization: {scheme} {KEY}\r\n");
        let r = post_json(p.addr(), "/v1/chat/completions", &header, chat);
        assert_eq!(r.status, 200, "{scheme}: {}", r.text());
    }
    let basic = format!("Authorization: Basic {KEY}\r\n");
    assert_eq!(
        post_json(p.addr(), "/v1/chat/completions", &basic, chat).status,
        401
    );
}

// ---- The binary: SIGHUP reloads --------------------------------------------

/// An `aiproxy` process on `--port port`, its stderr in a file.
struct Process {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Process {
    fn start(config: &Path, port: u16) -> Process {
        let log = config.with_extension("log");
        let child = Command::new(env!("CARGO_BIN_EXE_aiproxy"))
            .args(["--config", config.to_str().unwrap()])
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let process = Process { child, addr, log };
        process.wait_until(|p| TcpStream::connect(p.addr).is_ok());
        process
    }

    fn hup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status(&self, method: &str, path: &str, headers: &str) -> u16 {
        roundtrip(
            self.addr,
            format!(
                "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n"
            )
            .as_bytes(),
        )
        .status
    }

    /// Polls `ready` (a readiness check, not a sleep) for up to 10 s.
    fn wait_until(&self, ready: impl Fn(&Process) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready(self) {
            assert!(Instant::now() < deadline, "not reached within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Runs the calling test again, alone, in a private network namespace
/// whose only interface is its own loopback: there a listener on 0.0.0.0
/// is a non-loopback listener that nothing outside can reach. Returns
/// false in the namespace (run the test body), true outside (done).
fn rerun_in_private_network(test: &str) -> bool {
    const INSIDE: &str = "AIPROXY_TEST_PRIVATE_NETWORK";
    if std::env::var_os(INSIDE).is_some() {
        return false;
    }
    let status = Command::new("unshare")
        .args(["--map-root-user", "--net", "sh", "-c"])
        .arg(r#"ip link set lo up && exec "$0" "$@""#)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env(INSIDE, "1")
        .status()
        .expect("this test needs unshare(1) from util-linux");
    assert!(
        status.success(),
        "{test} failed in its network namespace (or unshare --map-root-user --net is not \
         permitted here): {status}"
    );
    true
}

#[test]
fn a_reload_never_leaves_a_public_listener_without_a_key() {
    if rerun_in_private_network("a_reload_never_leaves_a_public_listener_without_a_key") {
        return;
    }
    let config = temp_path("public.yaml");
    std::fs::write(
        &config,
        format!("host: 0.0.0.0\napi_key: {KEY}\nmodel_providers: [mock]\n"),
    )
    .unwrap();
    let gateway = Process::start(&config, free_port());
    assert_eq!(gateway.status("DELETE", "/cache/clear", ""), 401);

    // The new file moves the host to loopback and drops the key; the
    // socket stays bound to 0.0.0.0, so the keys must stay too.
    std::fs::write(&config, "host: 127.0.0.1\nmodel_providers: [mock]\n").unwrap();
    gateway.hup();
    gateway.wait_until(|g| {
        let log = g.log();
        log.contains("reload refused") || log.contains("configuration reloaded")
    });
    assert_eq!(gateway.status("DELETE", "/cache/clear", ""), 401);
    let log = gateway.log();
    let refusal = log.lines().find(|l| l.contains("reload refused"));
    let refusal = refusal.unwrap_or_else(|| panic!("no refusal in the log: {log}"));
    assert!(refusal.contains(" error "), "logged as an error: {refusal}");
    assert!(
        refusal.contains("0.0.0.0"),
        "names the running listener: {refusal}"
    );
    assert_eq!(
        gateway.status("GET", "/cache/stats", AUTH),
        200,
        "old key kept"
    );

    // A reload that keeps a key is applied as usual.
    std::fs::write(
        &config,
        "host: 0.0.0.0\napi_key: next\nmodel_providers: [mock]\n",
    )
    .unwrap();
    gateway.hup();
    gateway.wait_until(|g| g.log().contains("configuration reloaded"));
    assert_eq!(gateway.status("GET", "/cache/stats", AUTH), 401);
    let next = "Authorization: Bearer next\r\n";
    assert_eq!(gateway.status("GET", "/cache/stats", next), 200);
    let _ = std::fs::remove_file(&config);
}

#[test]
fn a_failed_reload_keeps_the_log_format_and_level() {
    let config = temp_path("log-format.yaml");
    std::fs::write(&config, "model_providers: [mock]\nlog: {format: text}\n").unwrap();
    let gateway = Process::start(&config, free_port());
    // Loads, but cannot build its provider: the reload fails after parsing.
    std::fs::write(
        &config,
        "model_providers: [gemini-cli]\ngemini: {oauth_creds_file: /nonexistent/creds.json}\n\
         log: {format: json, level: error}\n",
    )
    .unwrap();
    gateway.hup();
    gateway.wait_until(|g| g.log().contains("reload failed"));
    assert_eq!(gateway.status("GET", "/health", ""), 200);
    gateway.wait_until(|g| g.log().contains("route=/health"));
    for line in gateway.log().lines() {
        assert!(!line.starts_with('{'), "still text, not JSON: {line}");
    }
    let _ = std::fs::remove_file(&config);
}

#[test]
fn the_log_bounds_an_echoed_path() {
    let config = temp_path("log-bound.yaml");
    std::fs::write(&config, "model_providers: [mock]\n").unwrap();
    let gateway = Process::start(&config, free_port());
    let path = format!("/{}", "p".repeat(30 * 1024));
    for _ in 0..20 {
        let mut s = TcpStream::connect(gateway.addr).unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(support::read_response(&mut s).status, 404);
    }
    gateway.wait_until(|g| g.log().matches("status=404").count() == 20);
    let log = gateway.log();
    assert!(log.len() < 20 * 1024, "{} bytes of log", log.len());
    let _ = std::fs::remove_file(&config);
}
