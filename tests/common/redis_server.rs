//! A real `redis-server` on a free loopback port for tests: no
//! persistence, readiness by PING, killed (and its directory removed) on
//! drop. Shared by `tests/redis_cache.rs` and `tests/cache_e2e.rs`, which
//! also include `common/ports.rs` as `ports`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start(extra: &[&str]) -> Self {
        let port = crate::ports::free_port();
        let dir = std::env::temp_dir().join(format!("aiproxy-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = Self {
            child: spawn(port, &dir, extra),
            port,
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        server.wait_ready();
        server
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("redis-server exited at start: {status}");
            }
            let ping = self
                .client()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            match ping {
                Ok(_) => return,
                // NOAUTH also proves it is up.
                Err(e) if e.to_string().contains("NOAUTH") => return,
                Err(e) if Instant::now() > deadline => panic!("redis-server not ready: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// A direct connection for the test's own checks and fault injection.
    pub fn client(&self) -> redis::RedisResult<redis::Connection> {
        let mut url = format!("redis://127.0.0.1:{}/", self.port);
        if let Some(i) = self.extra.iter().position(|a| a == "--requirepass") {
            url = format!("redis://:{}@127.0.0.1:{}/", self.extra[i + 1], self.port);
        }
        let c = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(1))?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(c)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same port after [`RedisServer::kill`].
    pub fn restart(&mut self) {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.child = spawn(self.port, &self.dir, &extra);
        self.wait_ready();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(port: u16, dir: &PathBuf, extra: &[&str]) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (apt-get install -y redis-server)")
}
