//! OAuth credential files shared by gemini-cli, kiro-api and qwen-api.
//!
//! Each provider reads a JSON file written by another tool's login (Gemini
//! CLI, Kiro IDE, Qwen Code) and keeps its access token fresh. The rules,
//! the same for all three:
//!
//! * refresh proactively when less than [`REFRESH_MARGIN_MS`] remain, and
//!   once when the upstream rejects the token (401, or 403 for Kiro);
//! * one refresh at a time per credential: the first caller refreshes,
//!   the others wait on a condition variable and take its result;
//! * a failed refresh keeps the old token in use until it really expires,
//!   and is not retried for [`RETRY_AFTER_FAILURE_MS`] so a dead token
//!   endpoint is not hammered by every request;
//! * before refreshing, the file is read again: when another process (the
//!   CLI itself, or a second gateway) already wrote a fresh token, that one
//!   is taken without a network call;
//! * the refreshed fields are merged into the file's JSON and written back
//!   atomically (temporary file in the same directory, then rename) with
//!   mode 0600. A credentials file is never deleted.
//!
//! The provider-specific parts (where the token and expiry live, how to
//! refresh) are a [`Format`].

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::log;
use crate::time::rfc3339;

/// Refresh when less than this remains (5 minutes).
pub const REFRESH_MARGIN_MS: u64 = 5 * 60 * 1000;
/// After a failed refresh, wait this long before trying again while the
/// old token still works (or before failing fast once it does not).
pub const RETRY_AFTER_FAILURE_MS: u64 = 30 * 1000;
/// A rejected token that was refreshed this recently is not refreshed
/// again: the rejection is about something else (suspension, quota).
pub const MIN_REFRESH_INTERVAL_MS: u64 = 30 * 1000;
/// Largest credentials file or token answer read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What one provider's credentials file looks like.
pub trait Format: Send + Sync {
    /// The access token and its expiry (ms since the epoch; `None` when
    /// the file does not say) in the file's JSON.
    fn token(&self, creds: &Value) -> Option<(String, Option<u64>)>;

    /// Exchanges the refresh token. Returns the fields to merge into the
    /// file, or a message for the operator (never containing a token).
    fn refresh(&self, creds: &Value) -> Result<Map<String, Value>, String>;
}

/// An access token handed to one request.
#[derive(Clone, Debug)]
pub struct Token {
    /// The bearer token.
    pub access: String,
    /// Which refresh produced it; passed back to
    /// [`Credential::refresh_rejected`].
    pub generation: u64,
    /// The credentials the token came from (for provider fields such as
    /// `profileArn` or `resource_url`).
    pub creds: Arc<Value>,
}

struct State {
    creds: Arc<Value>,
    generation: u64,
    refreshing: bool,
    refreshes: u64,
    last_refresh_ms: Option<u64>,
    last_failure_ms: Option<u64>,
    last_error: Option<String>,
}

/// One credentials file and its token, shared by every request of an
/// instance.
pub struct Credential<F> {
    path: PathBuf,
    format: F,
    state: Mutex<State>,
    changed: Condvar,
}

/// Reads and parses a credentials file (a JSON object).
pub fn read_json(path: &Path) -> Result<Value, String> {
    let mut text = String::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES).read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    if !value.is_object() {
        return Err(format!("{} is not a JSON object", path.display()));
    }
    Ok(value)
}

/// Resets `refreshing` even if the refresh panics, so waiters never hang.
struct RefreshGuard<'a, F> {
    cred: &'a Credential<F>,
}

impl<F> Credential<F> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<F> Drop for RefreshGuard<'_, F> {
    fn drop(&mut self) {
        let mut st = self.cred.lock();
        st.refreshing = false;
        drop(st);
        self.cred.changed.notify_all();
    }
}

impl<F: Format> Credential<F> {
    /// Loads `path`; fails when it cannot be read or parsed.
    pub fn load(path: PathBuf, format: F) -> Result<Self, String> {
        let creds = read_json(&path)?;
        Ok(Self::new(path, creds, format))
    }

    /// A credential over already-parsed `creds` stored at `path`.
    pub fn new(path: PathBuf, creds: Value, format: F) -> Self {
        Self {
            path,
            format,
            state: Mutex::new(State {
                creds: Arc::new(creds),
                generation: 0,
                refreshing: false,
                refreshes: 0,
                last_refresh_ms: None,
                last_failure_ms: None,
                last_error: None,
            }),
            changed: Condvar::new(),
        }
    }

    /// The provider format.
    pub fn format(&self) -> &F {
        &self.format
    }

    /// The credentials as last loaded or refreshed.
    pub fn creds(&self) -> Arc<Value> {
        Arc::clone(&self.lock().creds)
    }

    /// The file the credential lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A token for one request: the current one, refreshed first when it
    /// expires within [`REFRESH_MARGIN_MS`]. Fails only when no usable
    /// token exists (expired, and the refresh failed).
    pub fn token(&self) -> Result<Token, String> {
        self.acquire(None)
            .and_then(|t| t.ok_or_else(|| "no token".to_owned()))
    }

    /// The upstream rejected the token of `generation`: returns a newer
    /// token (refreshing once for all callers that saw the same
    /// rejection), or `None` when the token was refreshed moments ago and
    /// the rejection must be relayed as it is.
    pub fn refresh_rejected(&self, generation: u64) -> Result<Option<Token>, String> {
        self.acquire(Some(generation))
    }

    fn current(&self, st: &State) -> Option<Token> {
        let (access, _) = self.format.token(&st.creds)?;
        Some(Token {
            access,
            generation: st.generation,
            creds: Arc::clone(&st.creds),
        })
    }

    fn acquire(&self, rejected: Option<u64>) -> Result<Option<Token>, String> {
        let mut st = self.lock();
        loop {
            while st.refreshing {
                st = self
                    .changed
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            let now = now_ms();
            let token = self.format.token(&st.creds);
            let valid = token
                .as_ref()
                .is_some_and(|(_, exp)| exp.is_none_or(|e| now < e));
            let fresh = token
                .as_ref()
                .is_some_and(|(_, exp)| exp.is_none_or(|e| now + REFRESH_MARGIN_MS < e));
            let failed_recently = st
                .last_failure_ms
                .is_some_and(|t| now.saturating_sub(t) < RETRY_AFTER_FAILURE_MS);
            match rejected {
                None if fresh => return Ok(self.current(&st)),
                None if valid && failed_recently => return Ok(self.current(&st)),
                Some(g) if g != st.generation && valid => return Ok(self.current(&st)),
                Some(_)
                    if st
                        .last_refresh_ms
                        .is_some_and(|t| now.saturating_sub(t) < MIN_REFRESH_INTERVAL_MS) =>
                {
                    return Ok(None);
                }
                _ if failed_recently => {
                    return Err(st
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "token refresh failed".to_owned()));
                }
                _ => {}
            }
            st.refreshing = true;
            let creds = Arc::clone(&st.creds);
            drop(st);
            let result = {
                let _guard = RefreshGuard { cred: self };
                self.refresh_now(&creds)
            };
            st = self.lock();
            let now = now_ms();
            match result {
                Ok(fresh_creds) => {
                    st.creds = Arc::new(fresh_creds);
                    st.generation += 1;
                    st.refreshes += 1;
                    st.last_refresh_ms = Some(now);
                    st.last_failure_ms = None;
                    st.last_error = None;
                    // Loop: the new token is returned by the checks above.
                }
                Err(message) => {
                    log::warn(&format!("{}: {message}", self.path.display()));
                    st.last_failure_ms = Some(now);
                    st.last_error = Some(message.clone());
                    if valid && rejected.is_none() {
                        // Keep serving the old token until it expires.
                        return Ok(self.current(&st));
                    }
                    return Err(message);
                }
            }
        }
    }

    /// Gets fresh credentials: from the file when another process
    /// refreshed it, else from the token endpoint (then written back).
    fn refresh_now(&self, creds: &Value) -> Result<Value, String> {
        let ours = self.format.token(creds).map(|(t, _)| t);
        if let Ok(disk) = read_json(&self.path)
            && let Some((token, exp)) = self.format.token(&disk)
            && Some(&token) != ours.as_ref()
            && exp.is_some_and(|e| now_ms() + REFRESH_MARGIN_MS < e)
        {
            log::info(&format!(
                "{}: picked up a token refreshed by another process",
                self.path.display()
            ));
            return Ok(disk);
        }
        let update = self.format.refresh(creds)?;
        // Merge into what is on disk now, so fields other tools wrote
        // since we loaded the file survive.
        let mut merged = match read_json(&self.path) {
            Ok(Value::Object(map)) => map,
            _ => creds.as_object().cloned().unwrap_or_default(),
        };
        for (k, v) in update {
            merged.insert(k, v);
        }
        let merged = Value::Object(merged);
        let text = serde_json::to_string_pretty(&merged).unwrap_or_default();
        if let Err(e) = write_atomic(&self.path, text.as_bytes()) {
            // The new token still works for this process.
            log::warn(&format!(
                "{}: refreshed token could not be saved: {e}",
                self.path.display()
            ));
        } else {
            log::info(&format!("{}: access token refreshed", self.path.display()));
        }
        Ok(merged)
    }

    /// Credential status for `/health`: validity and refresh history,
    /// never a token.
    pub fn status(&self) -> Value {
        let st = self.lock();
        let now = now_ms();
        let token = self.format.token(&st.creds);
        let expiry = token.as_ref().and_then(|(_, e)| *e);
        let state = match (&token, expiry) {
            (None, _) => "no_token",
            (Some(_), Some(e)) if now >= e => "expired",
            (Some(_), Some(e)) if now + REFRESH_MARGIN_MS >= e => "expiring",
            _ => "valid",
        };
        json!({
            "credentials_file": self.path.display().to_string(),
            "state": state,
            "valid_until": expiry.map(rfc3339),
            "expires_in_seconds": expiry.map(|e| (e as i64 - now as i64) / 1000),
            "refreshes": st.refreshes,
            "last_refresh": st.last_refresh_ms.map(rfc3339),
            "last_error": st.last_error,
        })
    }
}

/// Writes `bytes` to `path` atomically with mode 0600: a temporary file in
/// the same directory, synced, then renamed over the target (the target of
/// a symbolic link, so the link survives).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "credentials".to_owned());
    let tmp = dir.join(format!(
        ".{name}.aiproxy-{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    let renamed = written.and_then(|()| fs::rename(&tmp, &target));
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `application/x-www-form-urlencoded` body from pairs.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_component(k, &mut out);
        out.push('=');
        encode_component(v, &mut out);
    }
    out
}

fn encode_component(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

/// The access token and its expiry (Unix ms) of a file that keeps them as
/// `access_token` and `expiry_date`, as the Gemini CLI and Qwen Code do.
pub fn token_with_expiry_ms(creds: &Value) -> Option<(String, Option<u64>)> {
    let token = creds["access_token"].as_str().filter(|t| !t.is_empty())?;
    Some((token.to_owned(), as_u64(creds.get("expiry_date"))))
}

/// A form-encoded OAuth2 `refresh_token` grant for such a file: posts the
/// file's refresh token with the `client` fields, and returns the fields
/// to write back (`access_token`, `expiry_date` in ms, and those of `keep`
/// the answer carries). `tool` names the login tool for the error text.
pub fn refresh_with_expiry_ms(
    agent: &ureq::Agent,
    token_url: &str,
    creds: &Value,
    client: &[(&str, &str)],
    keep: &[&str],
    tool: &str,
) -> Result<Map<String, Value>, String> {
    let refresh = creds["refresh_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            format!("the credentials have no refresh_token; log in again with `{tool}`")
        })?;
    let mut fields = vec![("grant_type", "refresh_token"), ("refresh_token", refresh)];
    fields.extend_from_slice(client);
    let answer = post_token(
        agent,
        token_url,
        "application/x-www-form-urlencoded",
        &form(&fields),
    )?;
    let access = answer["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or("token answer has no access_token")?;
    let expires_in = as_u64(answer.get("expires_in")).unwrap_or(3600);
    let mut update = Map::new();
    update.insert("access_token".into(), Value::from(access));
    update.insert(
        "expiry_date".into(),
        Value::from(now_ms() + expires_in * 1000),
    );
    for key in keep {
        if let Some(v) = answer.get(*key).filter(|v| v.is_string()) {
            update.insert((*key).into(), v.clone());
        }
    }
    Ok(update)
}

/// Posts a token request and returns the JSON answer, or an operator
/// message naming the endpoint, the status and the upstream's own words.
pub fn post_token(
    agent: &ureq::Agent,
    url: &str,
    content_type: &str,
    body: &str,
) -> Result<Value, String> {
    let resp = agent
        .post(url)
        .header("Content-Type", content_type)
        .header("Accept", "application/json")
        .send(body)
        .map_err(|e| format!("token refresh at {url} failed: {e}"))?;
    let status = resp.status().as_u16();
    let mut text = String::new();
    let _ = resp
        .into_body()
        .into_reader()
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text);
    if !(200..300).contains(&status) {
        let detail: String = text.trim().chars().take(300).collect();
        return Err(format!(
            "token refresh at {url} answered HTTP {status}: {detail}; log in again with the provider's own tool if this persists"
        ));
    }
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| format!("token refresh at {url} answered invalid JSON: {e}"))?;
    if !value.is_object() {
        return Err(format!("token refresh at {url} answered a non-object"));
    }
    Ok(value)
}

/// A JSON number or numeric string as `u64` (expiry fields vary).
pub fn as_u64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f as u64),
        _ => None,
    }
}

/// Parses an RFC 3339 / ISO-8601 time (`2025-01-02T03:04:05.678Z`,
/// `…+02:00`) into ms since the epoch.
pub fn parse_iso8601(s: &str) -> Option<u64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let padded = format!("{:0<3}", &frac[..digits.min(3)]);
        millis = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh = rest.get(1..3)?.parse::<i64>().ok()?;
            let om = rest
                .get(3..)
                .map(|t| t.trim_start_matches(':'))
                .filter(|t| !t.is_empty())
                .map_or(Some(0), |t| t.parse::<i64>().ok())?;
            sign * (oh * 60 + om)
        }
    };
    // Days from civil (Howard Hinnant).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    u64::try_from(secs * 1000 + millis).ok()
}

/// A random-looking RFC 4122 version 4 UUID (request ids, conversation
/// ids); uniqueness matters, not unpredictability.
pub fn uuid4() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut words = [0u64; 2];
    for w in &mut words {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
        h.write_u64(now_ms());
        *w = h.finish();
    }
    let hi = words[0];
    let lo = words[1];
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0x0fff,
        ((lo >> 48) & 0x3fff) | 0x8000,
        lo & 0xffff_ffff_ffff
    )
}

/// The default location of a credentials file under the home directory.
pub fn home_path(relative: &str) -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(relative)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::thread;

    #[test]
    fn iso8601_parsing() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_iso8601("2025-01-02T03:04:05.678Z"),
            Some(1_735_787_045_678)
        );
        assert_eq!(
            parse_iso8601("2025-01-02T05:04:05.678+02:00"),
            Some(1_735_787_045_678)
        );
        assert_eq!(
            parse_iso8601("2025-01-02T03:04:05.6Z"),
            Some(1_735_787_045_600)
        );
        assert_eq!(parse_iso8601("2025-01-02"), None);
        assert_eq!(parse_iso8601("garbage-garbage-garbage"), None);
        // Round trip through the formatter used for /health.
        let t = 1_767_225_600_123;
        assert_eq!(parse_iso8601(&rfc3339(t)), Some(t));
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "1//a b+c")
            ]),
            "grant_type=refresh_token&refresh_token=1%2F%2Fa%20b%2Bc"
        );
    }

    #[test]
    fn uuids_look_like_v4() {
        let u = uuid4();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert!(matches!(u.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(uuid4(), uuid4());
    }

    /// A format over `{"t": token, "e": expiry}` whose refresh counts calls.
    struct Fake {
        calls: Arc<AtomicUsize>,
        fail: bool,
        gate: Option<crossbeam_channel::Receiver<()>>,
    }

    impl Format for Fake {
        fn token(&self, creds: &Value) -> Option<(String, Option<u64>)> {
            Some((creds["t"].as_str()?.to_owned(), as_u64(creds.get("e"))))
        }
        fn refresh(&self, _: &Value) -> Result<Map<String, Value>, String> {
            if let Some(g) = &self.gate {
                let _ = g.recv();
            }
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.fail {
                return Err("refresh refused".into());
            }
            let mut m = Map::new();
            m.insert("t".into(), json!(format!("fresh{n}")));
            m.insert("e".into(), json!(now_ms() + 3_600_000));
            Ok(m)
        }
    }

    fn temp_file(name: &str, content: &Value) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "aiproxy-oauth-{}-{name}-{}",
            std::process::id(),
            now_ms()
        ));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("creds.json");
        fs::write(&path, content.to_string()).unwrap();
        path
    }

    #[test]
    fn concurrent_callers_share_one_refresh() {
        let path = temp_file("single", &json!({"t": "old", "e": 1, "keep": "me"}));
        let calls = Arc::new(AtomicUsize::new(0));
        let (open, gate) = crossbeam_channel::bounded(0);
        let cred = Arc::new(
            Credential::load(
                path.clone(),
                Fake {
                    calls: Arc::clone(&calls),
                    fail: false,
                    gate: Some(gate),
                },
            )
            .unwrap(),
        );
        let threads: Vec<_> = (0..10)
            .map(|_| {
                let cred = Arc::clone(&cred);
                thread::spawn(move || cred.token().unwrap().access)
            })
            .collect();
        // Let exactly one refresh through; the others must be waiting.
        open.send(()).unwrap();
        for t in threads {
            assert_eq!(t.join().unwrap(), "fresh1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let disk = read_json(&path).unwrap();
        assert_eq!(disk["t"], "fresh1");
        assert_eq!(disk["keep"], "me");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(cred.status()["state"], "valid");
        assert!(!cred.status().to_string().contains("fresh1"));
    }

    #[test]
    fn failed_refresh_keeps_the_old_token_until_expiry() {
        let soon = now_ms() + 60_000;
        let path = temp_file("keep", &json!({"t": "old", "e": soon}));
        let before = fs::read(&path).unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let cred = Credential::load(
            path.clone(),
            Fake {
                calls: Arc::clone(&calls),
                fail: true,
                gate: None,
            },
        )
        .unwrap();
        assert_eq!(cred.token().unwrap().access, "old");
        assert_eq!(cred.token().unwrap().access, "old");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "no retry within the cooldown"
        );
        assert_eq!(fs::read(&path).unwrap(), before, "file untouched");
        assert_eq!(cred.status()["last_error"], "refresh refused");
        // A rejection of the old token fails fast with the same message.
        assert_eq!(cred.refresh_rejected(0).unwrap_err(), "refresh refused");
    }

    #[test]
    fn expired_token_and_failed_refresh_is_an_error() {
        let path = temp_file("expired", &json!({"t": "old", "e": 1}));
        let cred = Credential::load(
            path,
            Fake {
                calls: Arc::new(AtomicUsize::new(0)),
                fail: true,
                gate: None,
            },
        )
        .unwrap();
        assert_eq!(cred.token().unwrap_err(), "refresh refused");
        assert_eq!(cred.status()["state"], "expired");
    }

    #[test]
    fn rejection_refreshes_once_then_relays() {
        let path = temp_file("rejected", &json!({"t": "old", "e": now_ms() + 3_600_000}));
        let calls = Arc::new(AtomicUsize::new(0));
        let cred = Credential::load(
            path,
            Fake {
                calls: Arc::clone(&calls),
                fail: false,
                gate: None,
            },
        )
        .unwrap();
        let t = cred.token().unwrap();
        assert_eq!(t.access, "old");
        let fresh = cred.refresh_rejected(t.generation).unwrap().unwrap();
        assert_eq!(fresh.access, "fresh1");
        // A second caller that saw the old token gets the new one for free.
        assert_eq!(
            cred.refresh_rejected(t.generation).unwrap().unwrap().access,
            "fresh1"
        );
        // The fresh token rejected again moments later: relay, no refresh.
        assert!(cred.refresh_rejected(fresh.generation).unwrap().is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn token_refreshed_by_another_process_is_picked_up() {
        let path = temp_file("other", &json!({"t": "old", "e": 1}));
        let calls = Arc::new(AtomicUsize::new(0));
        let cred = Credential::load(
            path.clone(),
            Fake {
                calls: Arc::clone(&calls),
                fail: false,
                gate: None,
            },
        )
        .unwrap();
        fs::write(
            &path,
            json!({"t": "cli", "e": now_ms() + 3_600_000}).to_string(),
        )
        .unwrap();
        assert_eq!(cred.token().unwrap().access, "cli");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
