//! The `aiproxy` process and its signals: SIGHUP reloads the configuration
//! file without dropping connections; SIGTERM drains and exits 0.

#[path = "common/ports.rs"]
mod ports;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Gateway {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Gateway {
    fn start(config: &std::path::Path) -> Gateway {
        Self::start_with_open_files(config, None)
    }

    /// Starts the binary, under `ulimit -n open_files` when given.
    fn start_with_open_files(config: &std::path::Path, open_files: Option<u32>) -> Gateway {
        let port = ports::free_port();
        let log = config.with_extension("log");
        let bin = env!("CARGO_BIN_EXE_aiproxy");
        let args = [
            "--config".to_owned(),
            config.to_str().unwrap().to_owned(),
            "--port".to_owned(),
            port.to_string(),
        ];
        let mut command = match open_files {
            None => Command::new(bin),
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), bin]);
                c
            }
        };
        let child = command
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let gateway = Gateway { child, addr, log };
        gateway.wait_until(|g| g.status("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n") == 200);
        gateway
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Status of one request on a new connection (0 if none came back).
    fn status(&self, raw: &str) -> u16 {
        let Ok(mut s) = TcpStream::connect(self.addr) else {
            return 0;
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let raw = raw.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1);
        if s.write_all(raw.as_bytes()).is_err() {
            return 0;
        }
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    fn log_contains(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|log| log.contains(text))
    }

    fn chat(&self, key: &str) -> u16 {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        self.status(&format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    /// Polls `ready` (a readiness check, not a sleep) for up to 10 s.
    fn wait_until(&self, ready: impl Fn(&Gateway) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready(self) {
            assert!(
                Instant::now() < deadline,
                "condition not reached within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn config_file(name: &str, yaml: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("aiproxy-{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn sighup_reloads_the_api_keys_without_a_restart() {
    let path = config_file("reload", "model_providers: [mock]\napi_key: old-key\n");
    let gateway = Gateway::start(&path);
    assert_eq!(gateway.chat("old-key"), 200);
    assert_eq!(gateway.chat("new-key"), 401);
    // A connection opened before the reload must survive it.
    let mut kept = TcpStream::connect(gateway.addr).unwrap();
    std::fs::write(&path, "model_providers: [mock]\napi_key: new-key\n").unwrap();
    gateway.signal("HUP");
    gateway.wait_until(|g| g.log_contains("configuration reloaded"));
    assert_eq!(gateway.chat("new-key"), 200);
    assert_eq!(gateway.chat("old-key"), 401);
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    kept.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_broken_reload_keeps_the_running_configuration() {
    let path = config_file("bad-reload", "model_providers: [mock]\napi_key: kept\n");
    let gateway = Gateway::start(&path);
    std::fs::write(
        &path,
        "model_providers: [mock]\napi_key: x\nno_such_key: 1\n",
    )
    .unwrap();
    gateway.signal("HUP");
    gateway.wait_until(|g| g.log_contains("reload failed"));
    assert!(
        gateway.log_contains("no_such_key"),
        "the log names the bad key"
    );
    assert_eq!(gateway.chat("kept"), 200);
    assert_eq!(gateway.chat("x"), 401);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let path = config_file("term", "model_providers: [mock]\nshutdown_timeout: 5s\n");
    let mut gateway = Gateway::start(&path);
    gateway.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = gateway.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_file(&path);
}

/// Reads one response with a `Content-Length` body, leaving the
/// connection open; returns its status.
fn read_one(stream: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            return 0;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .split("content-length:")
        .nth(1)
        .and_then(|rest| rest.split("\r\n").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn keep_alive_clients_under_a_low_open_files_limit_do_not_lock_new_ones_out() {
    let path = config_file("nofile", "model_providers: [mock]\nworkers: 4\n");
    let gateway = Gateway::start_with_open_files(&path, Some(64));
    assert!(
        gateway.log_contains("lowered to"),
        "the connection bound was not fitted to ulimit -n"
    );
    // More keep-alive clients than file descriptors: each got its answer
    // and idles. The oldest make room for the newest.
    let mut idle = Vec::new();
    for _ in 0..120 {
        let mut s = TcpStream::connect(gateway.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        assert_eq!(read_one(&mut s), 200, "client {} kept out", idle.len());
        idle.push(s);
    }
    assert_eq!(
        gateway.status("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        200
    );
    let log = std::fs::read_to_string(&gateway.log).unwrap();
    let warnings = log.lines().filter(|l| l.contains("connections")).count();
    assert!(
        warnings <= 3,
        "{warnings} warnings about connections:\n{log}"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_runtime_cache_switch_survives_sighup_until_the_file_changes_it() {
    let path = config_file(
        "override",
        "model_providers: [mock]\ncache: {enabled: true}\n",
    );
    let gateway = Gateway::start(&path);
    let cache_on = |g: &Gateway| {
        let mut s = TcpStream::connect(g.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /cache/stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.contains(r#""enabled":true"#)
    };
    assert!(cache_on(&gateway));
    assert_eq!(
        gateway
            .status("PUT /cache/disable HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"),
        200
    );
    assert!(!cache_on(&gateway));
    // The same file again: the run-time switch stays, and the log says so.
    gateway.signal("HUP");
    gateway.wait_until(|g| g.log_contains("as switched at run time"));
    assert!(!cache_on(&gateway), "SIGHUP undid PUT /cache/disable");
    // The file's own value changes (to off, then on): the file wins.
    std::fs::write(&path, "model_providers: [mock]\ncache: {enabled: false}\n").unwrap();
    gateway.signal("HUP");
    gateway.wait_until(|g| g.log_contains("is dropped"));
    assert!(!cache_on(&gateway));
    std::fs::write(&path, "model_providers: [mock]\ncache: {enabled: true}\n").unwrap();
    gateway.signal("HUP");
    gateway.wait_until(|g| cache_on(g));
    let _ = std::fs::remove_file(&path);
}
