//! Bodies of the fuzz targets (semver-exempt, hidden from the docs).
//!
//! Each target is a function over the raw bytes of one input that calls
//! the same public functions the server calls and panics when one of its
//! invariants breaks. `fuzz/fuzz_targets/<name>.rs` hands it libFuzzer's
//! inputs; `tests/fuzz_replay.rs` hands it every file of
//! `fuzz/corpus/<name>/` and `fuzz/regressions/<name>/`, so a plain
//! `cargo test` replays the corpus through exactly the same checks,
//! without cargo-fuzz.
//!
//! Adding a target: a function here, one line in [`TARGETS`], one file in
//! `fuzz/fuzz_targets/` (plus its `[[bin]]` in `fuzz/Cargo.toml`) and one
//! corpus directory. The replay test fails if a target has no corpus
//! directory or a directory names no target.

mod cluster;
mod config;
mod convert;
mod eventstream;
mod http;
mod pools;
mod route;
mod sse;
mod stream;
mod upstream;
#[cfg(feature = "websocket")]
mod websocket;

/// One fuzz target.
pub struct Target {
    /// Name of the fuzz binary and of its corpus directory.
    pub name: &'static str,
    /// Runs one input; panics on a broken invariant.
    pub run: fn(&[u8]),
    /// Most heap bytes one input of this length may hold at once; the
    /// fuzz binaries count allocations and fail an input that exceeds it.
    pub alloc_budget: fn(usize) -> usize,
}

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    Target {
        name: "http_head",
        run: http::http_head,
        alloc_budget: http::head_budget,
    },
    Target {
        name: "chunked_body",
        run: http::chunked_body,
        alloc_budget: http::chunked_budget,
    },
    Target {
        name: "route",
        run: route::route,
        alloc_budget: small_budget,
    },
    Target {
        name: "convert_openai",
        run: convert::convert_openai,
        alloc_budget: json_budget,
    },
    Target {
        name: "convert_anthropic",
        run: convert::convert_anthropic,
        alloc_budget: json_budget,
    },
    Target {
        name: "convert_gemini",
        run: convert::convert_gemini,
        alloc_budget: json_budget,
    },
    Target {
        name: "convert_responses",
        run: convert::convert_responses,
        alloc_budget: json_budget,
    },
    Target {
        name: "sse_decode",
        run: sse::sse_decode,
        alloc_budget: json_budget,
    },
    Target {
        name: "stream_convert",
        run: stream::stream_convert,
        alloc_budget: json_budget,
    },
    Target {
        name: "aws_eventstream",
        run: eventstream::aws_eventstream,
        alloc_budget: json_budget,
    },
    Target {
        name: "upstream_answer",
        run: upstream::upstream_answer,
        alloc_budget: upstream::budget,
    },
    Target {
        name: "cluster_datagram",
        run: cluster::cluster_datagram,
        alloc_budget: small_budget,
    },
    Target {
        name: "config_yaml",
        run: config::config_yaml,
        alloc_budget: json_budget,
    },
    Target {
        name: "pools_file",
        run: pools::pools_file,
        alloc_budget: json_budget,
    },
    #[cfg(feature = "websocket")]
    Target {
        name: "ws_message",
        run: websocket::ws_message,
        alloc_budget: json_budget,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

fn small_budget(len: usize) -> usize {
    (1 << 16) + 16 * len
}

/// Parsed JSON trees and converted copies of them: tens of bytes of heap
/// per input byte at worst, never more.
fn json_budget(len: usize) -> usize {
    (4 << 20) + 256 * len
}

/// Runs `f` on a thread with the stack size of the server's workers, so
/// deep recursion that only fits the fuzzer's 8 MiB main stack is found.
fn on_worker_stack<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .stack_size(crate::WORKER_STACK_BYTES)
            .spawn_scoped(s, f)
            .expect("spawn a worker-sized thread");
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Asserts that `decode` gives `whole` however `data` is split into
/// reads: at the two cuts derived from it, and byte by byte when small.
fn assert_split_invariant<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    whole: &T,
    decode: impl Fn(&[&[u8]]) -> T,
) {
    let [a, b] = cuts(data);
    assert_eq!(
        &decode(&[&data[..a], &data[a..b], &data[b..]]),
        whole,
        "split at {a},{b}"
    );
    if data.len() <= 1024 {
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(&decode(&bytes), whole, "byte by byte");
    }
}

/// Up to two cut points in `0..=len`, derived from the bytes of `data`
/// so that the fuzzer can steer them.
fn cuts(data: &[u8]) -> [usize; 2] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let len = data.len() as u64;
    let a = h % (len + 1);
    let b = a + (h >> 32) % (len - a + 1);
    [a as usize, b as usize]
}
