//! The `aiproxy` process and its signals: SIGHUP reloads the configuration
//! file without dropping connections; SIGTERM drains and exits 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Gateway {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Gateway {
    fn start(config: &std::path::Path) -> Gateway {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = config.with_extension("log");
        let child = Command::new(env!("CARGO_BIN_EXE_aiproxy"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "--port",
                &port.to_string(),
            ])
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
