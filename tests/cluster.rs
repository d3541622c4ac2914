//! Cluster nodes in one process, each with its own real UDP socket on
//! 127.0.0.1: discovery through one seed, failure detection, restarts,
//! strangers, replays and settings that reach every node; and two whole
//! gateways whose control handles change both. Every wait
//! polls the nodes' status with a deadline; none sleeps for a fixed time
//! to let something happen.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiproxy::cluster::{Key, Local, Node, Options, State, Status, Timing};

const SECRET: &[u8] = b"a shared secret for the tests";

#[derive(Default)]
struct Recorder {
    applied: Mutex<Vec<(String, String)>>,
    clears: AtomicUsize,
}

impl Recorder {
    fn value(&self, name: &str) -> Option<String> {
        let applied = self.applied.lock().unwrap();
        applied
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn clears(&self) -> usize {
        self.clears.load(Ordering::SeqCst)
    }
}

impl Local for Recorder {
    fn apply(&self, setting: &str, value: &str) {
        let mut applied = self.applied.lock().unwrap();
        applied.push((setting.to_owned(), value.to_owned()));
    }

    fn clear_cache(&self) {
        self.clears.fetch_add(1, Ordering::SeqCst);
    }
}

/// Short intervals, with room for a loaded test machine.
fn fast() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(100),
        suspect_after: Duration::from_millis(500),
        dead_after: Duration::from_millis(1500),
        forget_after: Duration::from_secs(30),
    }
}

struct Started {
    node: Node,
    local: Arc<Recorder>,
}

impl Started {
    fn status(&self) -> Status {
        self.node.status()
    }

    fn addr(&self) -> SocketAddr {
        self.node.local_addr()
    }
}

fn start_at(
    id: &str,
    bind: SocketAddr,
    seeds: &[String],
    timing: Timing,
    secret: &[u8],
) -> Started {
    let local = Arc::new(Recorder::default());
    let options = Options {
        node_id: id.to_owned(),
        bind,
        address: bind.to_string(),
        seeds: seeds.to_vec(),
        key: Key::new(secret),
        timing,
    };
    let node = Node::start(options, local.clone()).unwrap();
    Started { node, local }
}

fn start(id: &str, seeds: &[String], timing: Timing) -> Started {
    start_at(id, "127.0.0.1:0".parse().unwrap(), seeds, timing, SECRET)
}

fn seed(n: &Started) -> Vec<String> {
    vec![n.addr().to_string()]
}

/// Polls `check` until it holds; fails the test after `limit`.
fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn state_of(observer: &Started, node_id: &str) -> Option<(String, u64)> {
    observer
        .status()
        .node(node_id)
        .map(|n| (n.state.to_owned(), n.incarnation))
}

fn all_alive(nodes: &[&Started], n: usize) -> bool {
    nodes.iter().all(|x| {
        let s = x.status();
        s.nodes.len() == n && s.count(State::Alive) == n
    })
}

/// Three nodes; 2 and 3 know only node 1 (3 by the name `localhost`).
fn three(timing: Timing) -> [Started; 3] {
    let n1 = start("node1", &[], timing);
    let n2 = start("node2", &seed(&n1), timing);
    let n3 = start(
        "node3",
        &[format!("localhost:{}", n1.addr().port())],
        timing,
    );
    [n1, n2, n3]
}

#[test]
fn three_nodes_seeded_with_one_are_all_alive_within_three_seconds() {
    // The default intervals (heartbeat 1 s): discovery does not wait for
    // heartbeats, each newcomer is answered at once.
    let nodes = three(Timing::default());
    let took = wait_for("all three alive everywhere", Duration::from_secs(3), || {
        all_alive(&nodes.iter().collect::<Vec<_>>(), 3)
    });
    eprintln!("all alive after {took:?}");
    let s3 = nodes[2].status();
    let n2 = s3.node("node2").expect("node 3 learned node 2 from node 1");
    assert_eq!(n2.address, nodes[1].addr().to_string());
    assert_eq!(s3.nodes[0].node_id, "node3", "this node first");
}

#[test]
fn a_stopped_node_goes_suspect_then_dead_and_comes_back_with_a_new_incarnation() {
    let t = fast();
    let [n1, n2, n3] = three(t);
    wait_for("all alive", Duration::from_secs(10), || {
        all_alive(&[&n1, &n2, &n3], 3)
    });
    let (_, first_life) = state_of(&n1, "node3").unwrap();
    let port = n3.addr();
    n3.node.shutdown();
    let stopped = Instant::now();

    // Every state node 1 shows for node 3 from now on, in order.
    let mut seen: Vec<String> = Vec::new();
    let mut suspect_at = None;
    wait_for("node 3 dead on node 1", Duration::from_secs(10), || {
        let (state, _) = state_of(&n1, "node3").unwrap();
        if seen.last() != Some(&state) {
            if state == "suspect" {
                suspect_at = Some(stopped.elapsed());
            }
            seen.push(state.clone());
        }
        state == "dead"
    });
    let dead_at = stopped.elapsed();
    assert_eq!(seen, ["alive", "suspect", "dead"]);
    let suspect_at = suspect_at.unwrap();
    // Suspect `suspect_after` after the last heartbeat, which was at most
    // one interval before the stop; dead likewise.
    assert!(
        suspect_at >= t.suspect_after - t.heartbeat && suspect_at < t.suspect_after * 3,
        "suspect after {suspect_at:?}"
    );
    assert!(
        dead_at >= t.dead_after - t.heartbeat && dead_at < t.dead_after * 3,
        "dead after {dead_at:?}"
    );
    wait_for("node 3 dead on node 2", Duration::from_secs(5), || {
        state_of(&n2, "node3").unwrap().0 == "dead"
    });

    let n3 = start_at("node3", port, &seed(&n1), t, SECRET);
    wait_for(
        "node 3 alive again, as a new life",
        Duration::from_secs(10),
        || {
            [&n1, &n2].iter().all(|x| {
                state_of(x, "node3").is_some_and(|(s, inc)| s == "alive" && inc > first_life)
            })
        },
    );
    assert_eq!(n3.status().incarnation, state_of(&n1, "node3").unwrap().1);
    // Node 3 hears of node 2 from node 1's answer, which node 1 sends
    // before it tells node 2 anything; but the two arrive on different
    // threads.
    wait_for(
        "node 3 sees all three alive",
        Duration::from_secs(5),
        || all_alive(&[&n1, &n2, &n3], 3),
    );
}

#[test]
fn a_restarted_node_learns_the_whole_cluster_at_once_not_at_the_next_heartbeat() {
    // Heartbeats 30 s apart: whatever happens within the test happens
    // because a datagram was answered, not because an interval passed.
    let t = Timing {
        heartbeat: Duration::from_secs(30),
        suspect_after: Duration::from_secs(90),
        dead_after: Duration::from_secs(180),
        forget_after: Duration::from_secs(600),
    };
    let [n1, n2, n3] = three(t);
    wait_for("all alive", Duration::from_secs(5), || {
        all_alive(&[&n1, &n2, &n3], 3)
    });
    let first_life = n3.status().incarnation;
    n3.node.shutdown();
    // A new life counts from the wall clock in milliseconds; a real
    // restart takes longer than one.
    wait_for("the next millisecond", Duration::from_secs(1), || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        now.as_millis() > u128::from(first_life)
    });
    // Somewhere else, as a container that comes back with a new address.
    let n3 = start("node3", &seed(&n1), t);
    assert!(n3.status().incarnation > first_life);
    // Node 1 knew node 3 already, so this is no newcomer to it; it must
    // still send the restarted node everything, or node 3 would not hear
    // of node 2 for up to 30 s. Node 2 hears the new life from node 3,
    // which contacts it once it learns of it.
    let life = n3.status().incarnation;
    wait_for(
        "node 3 knows all three, and both others its new life",
        Duration::from_secs(5),
        || {
            all_alive(&[&n1, &n2, &n3], 3)
                && [&n1, &n2]
                    .iter()
                    .all(|x| state_of(x, "node3") == Some(("alive".to_owned(), life)))
        },
    );
    for x in [&n1, &n2] {
        let s = x.status();
        assert_eq!(s.node("node3").unwrap().address, n3.addr().to_string());
    }
}

#[test]
fn a_node_with_another_secret_is_never_admitted_and_its_datagrams_are_counted() {
    let t = fast();
    let n1 = start("node1", &[], t);
    let n2 = start("node2", &seed(&n1), t);
    let stranger = start_at(
        "intruder",
        "127.0.0.1:0".parse().unwrap(),
        &[n1.addr().to_string(), n2.addr().to_string()],
        t,
        b"not the cluster's secret at all",
    );
    // Twenty of its heartbeats refused by each node, and meanwhile the
    // two real nodes found each other.
    wait_for("bad MACs counted", Duration::from_secs(15), || {
        [&n1, &n2]
            .iter()
            .all(|x| x.status().dropped["bad_mac"] >= 20)
    });
    wait_for("1 and 2 alive", Duration::from_secs(10), || {
        all_alive(&[&n1, &n2], 2)
    });
    for x in [&n1, &n2] {
        let s = x.status();
        assert!(s.node("intruder").is_none(), "{s:?}");
        assert_eq!(s.dropped["replay"], 0);
        assert_eq!(s.dropped["malformed"], 0);
    }
    let s = stranger.status();
    assert_eq!(s.nodes.len(), 1, "nobody answers it: {s:?}");
    assert_eq!(s.received_datagrams, 0);
    assert!(n1.local.applied.lock().unwrap().is_empty());
}

#[test]
fn replayed_and_malformed_datagrams_are_dropped_and_counted() {
    let t = fast();
    // Node 1 also heartbeats to `tap`, a plain socket standing in for
    // someone who records the traffic.
    let tap = UdpSocket::bind("127.0.0.1:0").unwrap();
    tap.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n1 = start("node1", &[tap.local_addr().unwrap().to_string()], t);
    let n2 = start("node2", &seed(&n1), t);
    wait_for("1 and 2 alive", Duration::from_secs(10), || {
        all_alive(&[&n1, &n2], 2)
    });
    // A heartbeat node 1 sent to node 2 as well (one datagram, one
    // sequence number, every recipient).
    let mut buf = [0u8; 2048];
    let captured = loop {
        let (n, from) = tap.recv_from(&mut buf).unwrap();
        assert_eq!(from, n1.addr());
        let d = &buf[..n];
        if aiproxy::cluster::codec::decode(&Key::new(SECRET), d).is_ok_and(|d| {
            d.items.iter().any(
                |i| matches!(i, aiproxy::cluster::codec::Item::Member(m) if m.node_id == "node2"),
            )
        }) {
            break d.to_vec();
        }
    };
    for _ in 0..3 {
        tap.send_to(&captured, n2.addr()).unwrap();
    }
    // Of four copies (node 1's and the tap's three), exactly one counts.
    wait_for("three replays", Duration::from_secs(5), || {
        n2.status().dropped["replay"] >= 3
    });
    tap.send_to(b"GET / HTTP/1.1\r\n\r\n", n2.addr()).unwrap();
    let mut future = captured.clone();
    future[4] = 2;
    tap.send_to(&future, n2.addr()).unwrap();
    let mut big = captured.clone();
    big.resize(1500, 0);
    tap.send_to(&big, n2.addr()).unwrap();
    wait_for(
        "malformed and unknown version",
        Duration::from_secs(5),
        || {
            let d = n2.status().dropped;
            d["malformed"] == 2 && d["unknown_version"] == 1
        },
    );
    let s = n2.status();
    assert_eq!(s.dropped["replay"], 3);
    assert_eq!(s.dropped["bad_mac"], 0);
    assert_eq!(s.node("node1").unwrap().state, "alive");
}

#[test]
fn a_change_published_on_node_2_reaches_nodes_1_and_3_once() {
    let t = fast();
    let [n1, n2, n3] = three(t);
    wait_for("all alive", Duration::from_secs(10), || {
        all_alive(&[&n1, &n2, &n3], 3)
    });
    n2.node
        .publish_setting("load_balancer.algorithm", "least_requests")
        .unwrap();
    n2.node.publish_setting("cache.enabled", "false").unwrap();
    let version = n2.node.publish_cache_clear();
    assert_eq!(n2.status().settings_version, version);
    wait_for("changes on 1 and 3", Duration::from_secs(5), || {
        [&n1, &n3].iter().all(|x| {
            x.local.value("load_balancer.algorithm").as_deref() == Some("least_requests")
                && x.local.value("cache.enabled").as_deref() == Some("false")
                && x.local.clears() == 1
                && x.status().settings_version == version
        })
    });
    // Heard again with every heartbeat from two nodes: still applied once.
    let before = n1.status().received_datagrams;
    wait_for("ten more heartbeats", Duration::from_secs(10), || {
        n1.status().received_datagrams >= before + 10
    });
    for x in [&n1, &n3] {
        assert_eq!(x.local.clears(), 1);
        assert_eq!(x.local.applied.lock().unwrap().len(), 2);
        let s = x.status();
        assert_eq!(
            s.settings["load_balancer.algorithm"].value,
            "least_requests"
        );
        assert_eq!(s.settings["load_balancer.algorithm"].origin, "node2");
    }
    assert!(
        n2.local.applied.lock().unwrap().is_empty(),
        "not echoed back"
    );
    assert_eq!(n2.local.clears(), 0);
    assert!(n2.node.publish_setting("Bad Name", "x").is_err());
}

#[test]
fn a_node_started_after_a_change_converges_to_it() {
    let t = fast();
    let n1 = start("node1", &[], t);
    let n2 = start("node2", &seed(&n1), t);
    wait_for("1 and 2 alive", Duration::from_secs(10), || {
        all_alive(&[&n1, &n2], 2)
    });
    n2.node
        .publish_setting("load_balancer.algorithm", "random")
        .unwrap();
    wait_for("node 1 has it", Duration::from_secs(5), || {
        n1.local.value("load_balancer.algorithm").is_some()
    });
    // Changed again on node 1, after it saw node 2's change.
    n1.node
        .publish_setting("load_balancer.algorithm", "least_requests")
        .unwrap();
    n2.node.publish_cache_clear();
    wait_for("1 and 2 agree", Duration::from_secs(5), || {
        n1.status().settings_version == n2.status().settings_version
    });
    let late = start("node4", &seed(&n2), t);
    wait_for("node 4 converged", Duration::from_secs(5), || {
        let s = late.status();
        s.settings_version == n1.status().settings_version
            && s.nodes.len() == 3
            && late.local.clears() == 1
    });
    assert_eq!(
        late.local.value("load_balancer.algorithm").as_deref(),
        Some("least_requests"),
        "the newest write"
    );
}

#[test]
fn a_seed_that_comes_up_later_is_found() {
    let t = fast();
    let reserved = UdpSocket::bind("127.0.0.1:0").unwrap();
    let later = reserved.local_addr().unwrap();
    drop(reserved);
    let n1 = start("node1", &[later.to_string()], t);
    // Node 1 keeps trying the seed while nothing listens there.
    wait_for("attempts", Duration::from_secs(5), || {
        n1.status().sent_datagrams >= 3
    });
    let n2 = start_at("node2", later, &[], t, SECRET);
    wait_for("found", Duration::from_secs(5), || {
        all_alive(&[&n1, &n2], 2)
    });
}

#[test]
fn status_has_the_documented_shape() {
    let n1 = start("node1", &[], fast());
    let v = n1.status().to_json();
    for key in [
        "node_id",
        "address",
        "incarnation",
        "settings_version",
        "nodes",
        "settings",
        "dropped",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    let me = &v["nodes"][0];
    assert_eq!(me["node_id"], "node1");
    assert_eq!(me["state"], "alive");
    assert_eq!(me["last_heartbeat_ms_ago"], 0);
    assert_eq!(v["dropped"]["bad_mac"], 0);
}

/// Datagrams and bytes each node sends per second at rest, for the
/// README: `cargo test --test cluster cost_at_rest -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, 20 s per cluster size"]
fn cost_at_rest() {
    for n in [3usize, 10, 50] {
        let t = Timing::default();
        let first = start("node00", &[], t);
        let mut nodes = vec![first];
        for i in 1..n {
            let s = seed(&nodes[0]);
            nodes.push(start(&format!("node{i:02}"), &s, t));
        }
        let refs: Vec<&Started> = nodes.iter().collect();
        wait_for("all alive", Duration::from_secs(30), || all_alive(&refs, n));
        let before: Vec<Status> = nodes.iter().map(Started::status).collect();
        let started = Instant::now();
        // A measurement window, not a wait for something to happen; it
        // may catch one heartbeat more or less than its length says.
        std::thread::sleep(Duration::from_secs(20));
        let secs = started.elapsed().as_secs_f64();
        let after: Vec<Status> = nodes.iter().map(Started::status).collect();
        let per = |f: fn(&Status) -> u64| {
            let total: u64 = before.iter().zip(&after).map(|(b, a)| f(a) - f(b)).sum();
            total as f64 / n as f64 / secs
        };
        println!(
            "{n} nodes: per node {:.1} datagrams/s, {:.0} bytes/s sent (UDP payload), \
             {:.0} bytes per datagram",
            per(|s| s.sent_datagrams),
            per(|s| s.sent_bytes),
            per(|s| s.sent_bytes) / per(|s| s.sent_datagrams),
        );
    }
}

/// Two gateways in this process, clustered on loopback with port 0 (UDP
/// on the number the listener got).
fn gateway(node_id: &str, seeds: Vec<String>) -> aiproxy::Handle {
    let defaults = aiproxy::Config::default();
    let config = aiproxy::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        log: aiproxy::config::LogConfig {
            level: aiproxy::config::LogLevel::Error,
            ..defaults.log.clone()
        },
        cluster: aiproxy::config::ClusterConfig {
            enabled: true,
            node_id: node_id.to_owned(),
            seed_nodes: seeds,
            secret: Some(aiproxy::config::Secret::new("an embedded cluster secret")),
            timing: fast(),
            ..defaults.cluster.clone()
        },
        ..defaults
    };
    aiproxy::start(config).unwrap()
}

#[test]
fn the_control_handle_of_an_embedding_program_changes_every_node() {
    let a = gateway("embedded-a", Vec::new());
    let b = gateway("embedded-b", vec![a.addr().to_string()]);
    let (ca, cb) = (a.control(), b.control());
    let version = ca.set_cache_enabled(false).expect("clustered: a version");
    assert!(!ca.cache_enabled());
    wait_for("b follows a", Duration::from_secs(5), || {
        !cb.cache_enabled()
    });
    // And back, from the other node.
    let newer = cb.set_cache_enabled(true).unwrap();
    assert!(newer > version);
    wait_for("a follows b", Duration::from_secs(5), || ca.cache_enabled());
    assert!(cb.clear_cache().unwrap() > newer);
    a.shutdown();
    b.shutdown();
}
