//! `pools_file`: the provider pools file reader, JSON and YAML.

use crate::pools::{self, Format, MAX_MEMBERS, MAX_WEIGHT};

/// One input read as both formats (invalid UTF-8 replaced, as the reader
/// refuses it before parsing). A file that loads keeps the reader's
/// promises: unique uuids, each member in its provider's pool, weights in
/// range, the member bound; an error is one line.
pub fn pools_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for format in [Format::Json, Format::Yaml] {
        match super::on_worker_stack(|| pools::parse(&text, format)) {
            Ok(file) => {
                let members: Vec<_> = file.pools.iter().flat_map(|p| &p.members).collect();
                assert!(members.len() <= MAX_MEMBERS);
                for (i, m) in members.iter().enumerate() {
                    assert!(!m.uuid.is_empty() && m.uuid.len() <= 128, "{:?}", m.uuid);
                    assert!((1..=MAX_WEIGHT).contains(&m.weight));
                    assert!(members[..i].iter().all(|o| o.uuid != m.uuid), "{}", m.uuid);
                    let _ = m.balancer_settings();
                }
                for (i, pool) in file.pools.iter().enumerate() {
                    assert!(pool.members.iter().all(|m| m.kind == pool.kind));
                    assert!(file.pools[..i].iter().all(|p| p.kind != pool.kind));
                }
                let _ = format!("{file:?}");
            }
            Err(e) => assert!(!e.contains('\n'), "error is one line: {e}"),
        }
    }
}
