#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aiproxy_fuzz::run("upstream_answer", data));
