//! Cluster mode in real `aiproxy` processes: three nodes on 127.0.0.1
//! that find each other, notice a killed one and take it back after a
//! restart; a stranger with another secret and a replayed datagram,
//! dropped and counted; admin changes made on one node that reach the
//! others and a node started later; and a partition between network
//! namespaces that heals to the newest value.
//!
//! Every wait polls `GET /cluster/status` (or `/cache/stats`) with a
//! deadline. The failure-detection test runs the default intervals
//! (heartbeat 1 s, suspect after 3 s, dead after 10 s), so it takes
//! about 15 s.

#[path = "common/ports.rs"]
mod ports;
#[path = "integration/support.rs"]
mod support;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ports::free_tcp_and_udp_port;
use serde_json::Value;
use support::{Response, roundtrip};

const SECRET: &str = "a cluster secret for the process tests";

/// One `aiproxy` process.
struct Node {
    id: String,
    http: SocketAddr,
    /// Runs the binary: empty, or `ip netns exec NS` for the partition.
    launcher: Vec<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Child,
    log: PathBuf,
    /// Header lines for requests (the API key, when one is set).
    auth: String,
}

impl Node {
    /// Starts a loopback node on `port` (HTTP and UDP), seeded with
    /// `seeds`, and waits until it answers.
    fn start(id: &str, port: u16, seeds: &[String], extra: &[&str]) -> Node {
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--cluster-enabled",
            "--node-id",
            id,
            "--cluster-secret",
            SECRET,
            "--log-level",
            "debug",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if !seeds.is_empty() {
            args.extend(["--seed-nodes".to_owned(), seeds.join(",")]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let http = SocketAddr::from(([127, 0, 0, 1], port));
        Node::spawn(id, http, Vec::new(), args, Vec::new(), "")
    }

    fn spawn(
        id: &str,
        http: SocketAddr,
        launcher: Vec<String>,
        args: Vec<String>,
        env: Vec<(String, String)>,
        auth: &str,
    ) -> Node {
        let log = std::env::temp_dir().join(format!(
            "aiproxy-cluster-{}-{id}-{}.log",
            std::process::id(),
            http.port()
        ));
        let child = Node::command(&launcher, &args, &env, &log);
        let mut node = Node {
            id: id.to_owned(),
            http,
            launcher,
            args,
            env,
            child,
            log,
            auth: auth.to_owned(),
        };
        node.wait_ready();
        node
    }

    fn command(
        launcher: &[String],
        args: &[String],
        env: &[(String, String)],
        log: &PathBuf,
    ) -> Child {
        let bin = env!("CARGO_BIN_EXE_aiproxy");
        let mut command = match launcher.split_first() {
            None => Command::new(bin),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
        };
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    }

    fn wait_ready(&mut self) {
        let what = format!("{} answers /health", self.id);
        wait_for(&what, Duration::from_secs(10), || self.answers());
    }

    /// Whether the node answers `/health`, having logged that it listens
    /// on its address: another process on the same port (its bind
    /// failed) would answer too. A node that exited fails the test here.
    fn answers(&mut self) -> bool {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited before answering ({status})", self.id);
        }
        self.log_text()
            .contains(&format!("listening on http://{} ", self.http))
            && TcpStream::connect(self.http).is_ok()
            && self.get("/health").status == 200
    }

    /// Kills the process (SIGKILL: no goodbye to the other nodes).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same process again, same address and arguments.
    fn restart(&mut self) {
        self.kill();
        self.child = Node::command(&self.launcher, &self.args, &self.env, &self.log);
        self.wait_ready();
    }

    fn request(&self, method: &str, path: &str) -> Response {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{}\
             Content-Length: 0\r\n\r\n",
            self.auth
        );
        roundtrip(self.http, raw.as_bytes())
    }

    fn get(&self, path: &str) -> Response {
        self.request("GET", path)
    }

    fn put_json(&self, path: &str, body: &str) -> Response {
        let raw = format!(
            "PUT {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.auth,
            body.len()
        );
        roundtrip(self.http, raw.as_bytes())
    }

    fn chat(&self, text: &str) -> Response {
        let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}]}}"#);
        let raw = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.auth,
            body.len()
        );
        roundtrip(self.http, raw.as_bytes())
    }

    fn status(&self) -> Value {
        let resp = self.get("/cluster/status");
        assert_eq!(resp.status, 200, "{}", resp.text());
        resp.json()
    }

    fn cache(&self) -> Value {
        self.get("/cache/stats").json()
    }

    /// (state, incarnation) of `id` as this node sees it.
    fn member(&self, id: &str) -> Option<(String, u64)> {
        let status = self.status();
        let node = status["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["node_id"] == id)?
            .clone();
        Some((
            node["state"].as_str()?.to_owned(),
            node["incarnation"].as_u64()?,
        ))
    }

    fn udp(&self) -> String {
        self.http.to_string()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.id, self.log_text());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Polls `check` until it holds; fails the test after `limit`. Returns
/// the time it took.
fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether every node sees `n` members, all alive.
fn all_alive(nodes: &[&Node], n: usize) -> bool {
    nodes.iter().all(|node| {
        let status = node.status();
        let members = status["nodes"].as_array().unwrap();
        members.len() == n && members.iter().all(|m| m["state"] == "alive")
    })
}

/// Nodes 2 and 3 know only node 1 (node 3 by the name `localhost`).
fn three() -> [Node; 3] {
    let ports = [
        free_tcp_and_udp_port(),
        free_tcp_and_udp_port(),
        free_tcp_and_udp_port(),
    ];
    let n1 = Node::start("node1", ports[0], &[], &[]);
    let n2 = Node::start("node2", ports[1], &[n1.udp()], &[]);
    let n3 = Node::start("node3", ports[2], &[format!("localhost:{}", ports[0])], &[]);
    [n1, n2, n3]
}

#[test]
fn three_processes_find_each_other_and_a_killed_one_goes_suspect_then_dead_then_back() {
    let started = Instant::now();
    let [n1, n2, mut n3] = three();
    let took = wait_for(
        "all three alive on every node",
        Duration::from_secs(3),
        || all_alive(&[&n1, &n2, &n3], 3),
    );
    eprintln!(
        "all alive {took:?} after the third node answered ({:?} after the first started)",
        started.elapsed()
    );
    let s3 = n3.status();
    assert_eq!(s3["node_id"], "node3");
    assert_eq!(s3["nodes"][0]["node_id"], "node3", "this node first");
    assert_eq!(
        n3.member("node2").unwrap().0,
        "alive",
        "node 3 learned node 2 from node 1"
    );
    let (_, first_life) = n1.member("node3").unwrap();

    n3.kill();
    let killed = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    let mut suspect_at = None;
    wait_for("node 3 dead on node 1", Duration::from_secs(12), || {
        let (state, _) = n1.member("node3").unwrap();
        if seen.last() != Some(&state) {
            if state == "suspect" {
                suspect_at = Some(killed.elapsed());
            }
            seen.push(state.clone());
        }
        state == "dead"
    });
    let dead_at = killed.elapsed();
    assert_eq!(seen, ["alive", "suspect", "dead"]);
    let suspect_at = suspect_at.unwrap();
    eprintln!("node 3 suspect after {suspect_at:?}, dead after {dead_at:?}");
    // The last heartbeat came about one interval (1 s) or less before
    // the kill; the lower bounds leave room for a late one.
    assert!(
        suspect_at >= Duration::from_millis(1500) && suspect_at <= Duration::from_secs(4),
        "suspect after {suspect_at:?}"
    );
    assert!(
        dead_at >= Duration::from_secs(8) && dead_at <= Duration::from_secs(11),
        "dead after {dead_at:?}"
    );
    let metrics = n1.get("/metrics").text();
    assert!(
        metrics.contains("aiproxy_cluster_nodes{state=\"dead\"} 1"),
        "{metrics}"
    );

    n3.restart();
    wait_for(
        "node 3 alive again, as a new life",
        Duration::from_secs(5),
        || {
            [&n1, &n2].iter().all(|n| {
                n.member("node3")
                    .is_some_and(|(state, life)| state == "alive" && life > first_life)
            })
        },
    );
    assert_eq!(
        n3.status()["incarnation"].as_u64(),
        n1.member("node3").map(|(_, life)| life)
    );
    wait_for("all alive again", Duration::from_secs(5), || {
        all_alive(&[&n1, &n2, &n3], 3)
    });
}

#[test]
fn a_process_with_another_secret_is_never_admitted_and_a_replay_is_dropped() {
    // Node 1 also heartbeats to `tap`, a plain socket standing in for
    // someone who records the traffic.
    let tap = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tap_addr = tap.local_addr().unwrap().to_string();
    let n1 = Node::start("node1", free_tcp_and_udp_port(), &[tap_addr], &[]);
    let n2 = Node::start("node2", free_tcp_and_udp_port(), &[n1.udp()], &[]);
    let intruder_port = free_tcp_and_udp_port();
    let intruder = Node::spawn(
        "intruder",
        SocketAddr::from(([127, 0, 0, 1], intruder_port)),
        Vec::new(),
        [
            "--port",
            &intruder_port.to_string(),
            "--cluster-enabled",
            "--node-id",
            "intruder",
            "--cluster-secret",
            "not the cluster's secret at all",
            "--seed-nodes",
            &format!("{},{}", n1.udp(), n2.udp()),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        Vec::new(),
        "",
    );
    wait_for("its datagrams counted", Duration::from_secs(10), || {
        [&n1, &n2]
            .iter()
            .all(|n| n.status()["dropped"]["bad_mac"].as_u64() >= Some(3))
    });
    wait_for("1 and 2 alive", Duration::from_secs(5), || {
        all_alive(&[&n1, &n2], 2)
    });
    for n in [&n1, &n2] {
        assert!(n.member("intruder").is_none(), "{}", n.status());
        let metrics = n.get("/metrics").text();
        let line = metrics
            .lines()
            .find(|l| l.starts_with(r#"aiproxy_cluster_datagrams_dropped_total{reason="bad_mac"}"#))
            .unwrap_or_else(|| panic!("{metrics}"));
        let counted: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(counted >= 3.0, "{line}");
    }
    let alone = intruder.status();
    assert_eq!(alone["nodes"].as_array().unwrap().len(), 1, "{alone}");
    assert_eq!(alone["received_datagrams"], 0, "nobody answers it");
    assert!(
        n1.log_text()
            .contains("bad_mac: a node with another --cluster-secret"),
        "the drop is logged"
    );

    // A heartbeat node 1 sent to node 2 as well: one datagram, one
    // sequence number, every recipient. Older ones queued at the tap
    // may predate node 2's membership; skip them.
    tap.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    while tap.recv_from(&mut buf).is_ok() {}
    tap.set_nonblocking(false).unwrap();
    tap.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (n, from) = tap.recv_from(&mut buf).unwrap();
    assert_eq!(from.port(), n1.http.port());
    let captured = buf[..n].to_vec();
    let replays = || n2.status()["dropped"]["replay"].as_u64().unwrap();
    let before = replays();
    tap.send_to(&captured, n2.http).unwrap();
    tap.send_to(&captured, n2.http).unwrap();
    // Of three copies (node 1's own and the tap's two), one counts.
    wait_for("two replays dropped", Duration::from_secs(5), || {
        replays() >= before + 2
    });
    assert_eq!(replays(), before + 2);
    assert_eq!(n2.member("node1").unwrap().0, "alive");
}

#[test]
fn admin_changes_on_node_2_reach_nodes_1_and_3_and_a_node_started_later() {
    let [n1, n2, n3] = three();
    wait_for("all alive", Duration::from_secs(5), || {
        all_alive(&[&n1, &n2, &n3], 3)
    });
    for (n, text) in [(&n1, "one"), (&n3, "three")] {
        assert_eq!(n.chat(text).status, 200);
        assert_eq!(n.cache()["entries"], 1, "{}", n.id);
    }

    let cleared = n2.request("DELETE", "/cache/clear");
    assert_eq!(cleared.status, 200);
    let body = cleared.json();
    assert_eq!(body["cluster"]["propagating"], true, "{body}");
    let version = body["cluster"]["settings_version"].as_u64().unwrap();
    assert_eq!(n2.status()["settings_version"], version);
    wait_for("caches of 1 and 3 cleared", Duration::from_secs(3), || {
        [&n1, &n3].iter().all(|n| {
            n.cache()["entries"] == 0 && n.status()["settings_version"].as_u64() >= Some(version)
        })
    });

    let disabled = n2.request("PUT", "/cache/disable").json();
    assert_eq!(disabled["enabled"], false);
    let version = disabled["cluster"]["settings_version"].as_u64().unwrap();
    wait_for("caches of 1 and 3 off", Duration::from_secs(3), || {
        [&n1, &n3]
            .iter()
            .all(|n| n.cache()["enabled"] == false && n.status()["settings_version"] == version)
    });
    for n in [&n1, &n3] {
        let setting = &n.status()["settings"]["cache.enabled"];
        assert_eq!(setting["value"], "false");
        assert_eq!(setting["origin"], "node2", "applied, not published again");
        assert!(
            n.chat("after")
                .header("x-cache")
                .is_some_and(|v| v.eq_ignore_ascii_case("bypass")),
            "the cache is really off on {}",
            n.id
        );
    }

    let late = Node::start("node4", free_tcp_and_udp_port(), &[n3.udp()], &[]);
    wait_for("node 4 converged", Duration::from_secs(3), || {
        let s = late.status();
        s["settings_version"] == version
            && s["nodes"].as_array().unwrap().len() == 4
            && late.cache()["enabled"] == false
    });
    assert_eq!(
        late.status()["settings"]["cache.enabled"]["origin"],
        "node2"
    );
}

#[test]
fn cluster_status_needs_a_key_and_says_when_clustering_is_off() {
    let port = free_tcp_and_udp_port();
    let keyed = Node::spawn(
        "keyed",
        SocketAddr::from(([127, 0, 0, 1], port)),
        Vec::new(),
        [
            "--port",
            &port.to_string(),
            "--api-key",
            "k1",
            "--cluster-enabled",
            "--node-id",
            "keyed",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        Vec::new(),
        "",
    );
    assert_eq!(keyed.get("/cluster/status").status, 401);
    let with_key = roundtrip(
        keyed.http,
        b"GET /cluster/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer k1\r\n\
          Connection: close\r\n\r\n",
    );
    assert_eq!(with_key.status, 200);
    assert_eq!(with_key.json()["node_id"], "keyed");
    // UDP on the port of the listen address.
    assert_eq!(
        with_key.json()["address"],
        format!("127.0.0.1:{port}"),
        "{}",
        with_key.text()
    );

    let plain_port = free_tcp_and_udp_port();
    let plain = Node::spawn(
        "plain",
        SocketAddr::from(([127, 0, 0, 1], plain_port)),
        Vec::new(),
        vec!["--port".into(), plain_port.to_string()],
        Vec::new(),
        "",
    );
    let off = plain.get("/cluster/status");
    assert_eq!(off.status, 404);
    assert!(
        off.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--cluster-enabled"),
        "{}",
        off.text()
    );
    assert!(!plain.get("/metrics").text().contains("aiproxy_cluster"));
}

#[test]
fn a_cluster_off_loopback_without_a_secret_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_aiproxy"))
        .args([
            "--cluster-enabled",
            "--node-address",
            "10.0.0.1:3000",
            "--check-config",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("10.0.0.1:3000") && err.contains("--cluster-secret"),
        "{err}"
    );
}

/// Reruns `test` alone in new user, network and mount namespaces (as
/// `unshare --map-root-user --net --mount`), where it may create network
/// namespaces, veth pairs and a bridge; they vanish with it, and nothing
/// it does reaches an address outside. Returns true in the outer run,
/// whose work the inner run did.
fn rerun_in_sandbox(test: &str) -> bool {
    const INSIDE: &str = "AIPROXY_TEST_NETNS_SANDBOX";
    if std::env::var_os(INSIDE).is_some() {
        return false;
    }
    // `ip netns add` mounts under /run/netns: a private tmpfs on /run
    // keeps those mounts inside the sandbox.
    let status = Command::new("unshare")
        .args(["--map-root-user", "--net", "--mount", "sh", "-c"])
        .arg(r#"mount -t tmpfs sandbox /run && mkdir /run/netns && ip link set lo up && exec "$0" "$@""#)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--include-ignored", "--test-threads=1"])
        .arg("--nocapture")
        .env(INSIDE, "1")
        .status()
        .expect("this test needs unshare(1) from util-linux");
    assert!(
        status.success(),
        "{test} failed in its sandbox (or `unshare --map-root-user --net --mount` and \
         `ip netns add` are not permitted here): {status}"
    );
    true
}

/// Runs `ip` with `args`, which must succeed.
fn ip(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("this test needs ip(8) from iproute2");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three network namespaces n1..n3 at 10.77.0.1..3, joined by veth pairs
/// to a bridge where the test itself is 10.77.0.254. Removed on drop.
struct Lan;

impl Lan {
    const NODES: u8 = 3;

    fn new() -> Lan {
        ip("link add br0 type bridge");
        ip("addr add 10.77.0.254/24 dev br0");
        ip("link set br0 up");
        for i in 1..=Self::NODES {
            ip(&format!("netns add n{i}"));
            ip(&format!("link add h{i} type veth peer name e{i}"));
            ip(&format!("link set e{i} netns n{i}"));
            ip(&format!("link set h{i} master br0"));
            ip(&format!("link set h{i} up"));
            ip(&format!("-n n{i} addr add 10.77.0.{i}/24 dev e{i}"));
            ip(&format!("-n n{i} link set e{i} up"));
            ip(&format!("-n n{i} link set lo up"));
        }
        Lan
    }

    /// Drops (`add`) or lets through again (`del`) the traffic between
    /// node 3 and the other two, both ways; the test still reaches all.
    fn cut(&self, action: &str) {
        for (from, to) in [(1, 3), (2, 3), (3, 1), (3, 2)] {
            ip(&format!(
                "-n n{from} route {action} blackhole 10.77.0.{to}/32"
            ));
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for i in 1..=Self::NODES {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("n{i}")])
                .status();
        }
        let _ = Command::new("ip").args(["link", "del", "br0"]).status();
    }
}

/// A cluster-wide setting, driven over HTTP like an operator would.
#[derive(Clone, Copy, Debug)]
enum Knob {
    /// `PUT /cache/enable|disable`.
    Cache,
    /// `PUT /loadbalancer/algorithm`.
    Algorithm,
}

impl Knob {
    fn name(self) -> &'static str {
        match self {
            Knob::Cache => "cache.enabled",
            Knob::Algorithm => "load_balancer.algorithm",
        }
    }

    /// Two values the tests write, the older first.
    fn values(self) -> [&'static str; 2] {
        match self {
            Knob::Cache => ["false", "true"],
            Knob::Algorithm => ["least_requests", "random"],
        }
    }

    /// Sets `value` on `node`; the answer's settings version.
    fn set(self, node: &Node, value: &str) -> u64 {
        let resp = match self {
            Knob::Cache => {
                let path = if value == "true" {
                    "/cache/enable"
                } else {
                    "/cache/disable"
                };
                node.request("PUT", path)
            }
            Knob::Algorithm => node.put_json(
                "/loadbalancer/algorithm",
                &format!(r#"{{"algorithm":"{value}"}}"#),
            ),
        };
        assert_eq!(resp.status, 200, "{}", resp.text());
        let body = resp.json();
        assert_eq!(body["cluster"]["propagating"], true, "{body}");
        body["cluster"]["settings_version"].as_u64().unwrap()
    }

    /// The value in force on `node`, as its own endpoint reports it.
    fn get(self, node: &Node) -> String {
        match self {
            Knob::Cache => node.cache()["enabled"].to_string(),
            Knob::Algorithm => node.get("/loadbalancer/instances").json()["algorithm"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// The origin of the setting in `node`'s cluster status.
    fn origin(self, node: &Node) -> Value {
        node.status()["settings"][self.name()]["origin"].clone()
    }
}

/// Node 2 changes `knob`; nodes 1 and 3 follow, as does a node started
/// afterwards.
fn a_change_reaches_every_node_and_a_late_one(knob: Knob) {
    let [n1, n2, n3] = three();
    wait_for("all alive", Duration::from_secs(5), || {
        all_alive(&[&n1, &n2, &n3], 3)
    });
    let [value, _] = knob.values();
    let version = knob.set(&n2, value);
    assert_eq!(knob.get(&n2), value);
    wait_for("nodes 1 and 3 follow", Duration::from_secs(3), || {
        [&n1, &n3]
            .iter()
            .all(|n| knob.get(n) == value && n.status()["settings_version"] == version)
    });
    for n in [&n1, &n3] {
        assert_eq!(knob.origin(n), "node2", "applied, not published again");
    }
    let late = Node::start("node4", free_tcp_and_udp_port(), &[n3.udp()], &[]);
    wait_for("node 4 converged", Duration::from_secs(3), || {
        late.status()["settings_version"] == version && knob.get(&late) == value
    });
}

#[test]
fn an_algorithm_change_on_node_2_reaches_nodes_1_and_3_and_a_node_started_later() {
    a_change_reaches_every_node_and_a_late_one(Knob::Algorithm);
}

/// Three nodes in network namespaces; node 3 is cut off, `knob` is
/// changed on each side (node 3 last), the link comes back: all three
/// hold node 3's newer value, and a cache clear made alone on node 3
/// crosses once.
fn a_partition_heals_to_the_newest_write(knob: Knob) {
    // Declared first, dropped last: the nodes stop before their
    // namespaces go.
    let lan = Lan::new();
    // Off loopback: an API key for the listener, the secret for the
    // cluster, as in production; shorter intervals for a shorter test.
    let env: Vec<(String, String)> = [
        ("AIPROXY_CLUSTER_HEARTBEAT_INTERVAL", "200ms"),
        ("AIPROXY_CLUSTER_SUSPECT_AFTER", "1s"),
        ("AIPROXY_CLUSTER_DEAD_AFTER", "3s"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let node = |i: u8| {
        let host = format!("10.77.0.{i}");
        let args = [
            "--host",
            &host,
            "--port",
            "3000",
            "--api-key",
            "partition-key",
            "--cluster-enabled",
            "--node-id",
            &format!("node{i}"),
            "--cluster-secret",
            SECRET,
            "--seed-nodes",
            "10.77.0.1:3000,10.77.0.2:3000,10.77.0.3:3000",
            "--log-level",
            "debug",
        ];
        Node::spawn(
            &format!("node{i}"),
            format!("{host}:3000").parse().unwrap(),
            ["ip", "netns", "exec", &format!("n{i}")]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            args.iter().map(|s| (*s).to_owned()).collect(),
            env.clone(),
            "Authorization: Bearer partition-key\r\n",
        )
    };
    let (n1, n2, n3) = (node(1), node(2), node(3));
    let all = [&n1, &n2, &n3];
    wait_for("all alive", Duration::from_secs(5), || all_alive(&all, 3));
    assert_eq!(n1.chat("kept until the clear crosses").status, 200);
    assert_eq!(n1.cache()["entries"], 1);

    lan.cut("add");
    let not_alive = |n: &Node, id: &str| n.member(id).is_some_and(|(s, _)| s != "alive");
    wait_for(
        "each side sees the other silent",
        Duration::from_secs(5),
        || {
            not_alive(&n1, "node3")
                && not_alive(&n2, "node3")
                && not_alive(&n3, "node1")
                && not_alive(&n3, "node2")
        },
    );
    // Side 1+2 writes first; later, lone node 3 writes the other value
    // and clears its cache.
    let [older, newer] = knob.values();
    knob.set(&n1, older);
    wait_for("node 2 follows node 1", Duration::from_secs(3), || {
        knob.get(&n2) == older
    });
    knob.set(&n3, newer);
    let clear = n3.request("DELETE", "/cache/clear").json();
    let newest = clear["cluster"]["settings_version"].as_u64().unwrap();
    // Nothing crossed: each side holds its own value.
    for n in [&n1, &n2] {
        assert_eq!(knob.get(n), older, "{}", n.id);
        assert_eq!(knob.origin(n), "node1");
    }
    assert_eq!(knob.get(&n3), newer);
    assert_eq!(n1.cache()["entries"], 1, "node 3's clear did not cross");

    lan.cut("del");
    let took = wait_for(
        "all converged on node 3's newer write",
        Duration::from_secs(5),
        || {
            all_alive(&all, 3)
                && all.iter().all(|n| {
                    n.status()["settings_version"] == newest
                        && knob.origin(n) == "node3"
                        && knob.get(n) == newer
                })
        },
    );
    eprintln!("{knob:?}: converged {took:?} after the link came back");
    assert_eq!(n1.cache()["entries"], 0, "node 3's clear crossed, once");
}

#[test]
fn a_partition_heals_to_the_newest_cache_switch_made_on_either_side() {
    if rerun_in_sandbox("a_partition_heals_to_the_newest_cache_switch_made_on_either_side") {
        return;
    }
    a_partition_heals_to_the_newest_write(Knob::Cache);
}

#[test]
fn a_partition_heals_to_the_newest_algorithm_chosen_on_either_side() {
    if rerun_in_sandbox("a_partition_heals_to_the_newest_algorithm_chosen_on_either_side") {
        return;
    }
    a_partition_heals_to_the_newest_write(Knob::Algorithm);
}

#[test]
fn sighup_keeps_the_cluster_running_and_the_settings_it_received() {
    let config = std::env::temp_dir().join(format!(
        "aiproxy-cluster-{}-reload.yaml",
        std::process::id()
    ));
    let yaml =
        |id: &str| format!("cluster: {{enabled: true, node_id: {id}, secret: {SECRET:?}}}\n");
    std::fs::write(&config, yaml("node1")).unwrap();
    let port = free_tcp_and_udp_port();
    let n1 = Node::spawn(
        "node1",
        SocketAddr::from(([127, 0, 0, 1], port)),
        Vec::new(),
        vec![
            "--config".into(),
            config.to_str().unwrap().into(),
            "--port".into(),
            port.to_string(),
        ],
        Vec::new(),
        "",
    );
    let n2 = Node::start("node2", free_tcp_and_udp_port(), &[n1.udp()], &[]);
    wait_for("1 and 2 alive", Duration::from_secs(5), || {
        all_alive(&[&n1, &n2], 2)
    });
    assert_eq!(n2.request("PUT", "/cache/disable").status, 200);
    wait_for("node 1 follows", Duration::from_secs(3), || {
        n1.cache()["enabled"] == false
    });

    std::fs::write(&config, yaml("renamed")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &n1.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for("reloaded", Duration::from_secs(5), || {
        n1.log_text().contains("configuration reloaded")
    });
    assert!(
        n1.log_text()
            .contains("the cluster.* settings change only after a restart"),
        "{}",
        n1.log_text()
    );
    assert_eq!(n1.status()["node_id"], "node1", "not restarted");
    assert_eq!(
        n1.cache()["enabled"],
        false,
        "the switch received from node 2 survives the reload"
    );
    assert_eq!(n2.member("node1").unwrap().0, "alive");
    let _ = std::fs::remove_file(&config);
}
