//! Parsers for one setting's text, shared by all three sources (file,
//! environment, flags), so that `--port abc`, `AIPROXY_PORT=abc` and
//! `port: abc` get the same message. Each returns the message without the
//! key; the caller prefixes the key path and the source.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Longest duration accepted anywhere (one year): keeps `Instant + d`
/// arithmetic far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration: plain seconds (`30`, `1.5`) or a number with a unit
/// `ms`, `s`, `m` or `h` (`500ms`, `30s`, `5m`, `1h`).
pub fn duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("{text:?} is not a duration (seconds, or a number with a unit: 500ms, 30s, 5m, 1h)")
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit.trim_start() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let valid_number = !number.is_empty()
        && !number.starts_with('.')
        && !number.ends_with('.')
        && number.matches('.').count() <= 1;
    if !valid_number {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    match Duration::try_from_secs_f64(value * scale) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!("{text:?} is longer than one year")),
    }
}

/// Parses `true` or `false`, in any case, and the spellings systemd and
/// YAML 1.1 also use: `yes`/`no`, `on`/`off`, `1`/`0`.
pub fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{text:?} is not true or false")),
    }
}

/// Parses a TCP/UDP port, 0 to 65535 (0 means any free port).
pub fn port(text: &str) -> Result<u16, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a port number (0-65535)"))
}

/// Parses an unsigned integer in `min..=max`.
pub fn integer(text: &str, min: u64, max: u64) -> Result<u64, String> {
    let value: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if value < min && max >= u64::from(u32::MAX) {
        return Err(format!("{value} is too small (at least {min})"));
    }
    if value < min || value > max {
        return Err(format!("{value} is out of range ({min}-{max})"));
    }
    Ok(value)
}

/// Parses a listen host: an IPv4 or IPv6 address (brackets allowed) or
/// `localhost`, which means 127.0.0.1. Other names are refused because
/// resolving them at start-up would make the listen address depend on DNS.
pub fn host(text: &str) -> Result<IpAddr, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let bare = t
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(t);
    bare.parse()
        .map_err(|_| format!("{text:?} is not an IP address or localhost"))
}

/// Checks an upstream base URL: `http://` or `https://` and a host.
/// Returns it without a trailing `/`.
pub fn base_url(text: &str) -> Result<String, String> {
    let t = text.trim();
    let rest = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
        .ok_or_else(|| format!("{text:?} is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return Err(format!("{text:?} has no host"));
    }
    Ok(t.trim_end_matches('/').to_owned())
}

/// Checks a `host:port` address (a name is allowed: it is resolved when
/// used, as in a compose file's `redis:6379`).
pub fn host_port(text: &str) -> Result<String, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not host:port");
    let (host, port_text) = t.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) || port_text.is_empty() {
        return Err(bad());
    }
    port(port_text).map_err(|_| bad())?;
    Ok(t.to_owned())
}

/// Checks a value that must not be empty (names, paths).
pub fn non_empty(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(text.trim().to_owned())
    }
}

/// Checks a value against a fixed list of words.
pub fn one_of(text: &str, words: &[&str]) -> Result<String, String> {
    let t = text.trim();
    if words.contains(&t) {
        Ok(t.to_owned())
    } else {
        Err(format!("{text:?} is not one of {}", words.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_and_without_units() {
        let ms = Duration::from_millis;
        assert_eq!(duration("30").unwrap(), ms(30_000));
        assert_eq!(duration("30s").unwrap(), ms(30_000));
        assert_eq!(duration("500ms").unwrap(), ms(500));
        assert_eq!(duration("5m").unwrap(), ms(300_000));
        assert_eq!(duration("1h").unwrap(), ms(3_600_000));
        assert_eq!(duration("1.5").unwrap(), ms(1500));
        assert_eq!(duration("0").unwrap(), Duration::ZERO);
        assert_eq!(duration(" 2 s ").unwrap(), ms(2000));
    }

    #[test]
    fn garbage_durations_are_rejected() {
        for bad in [
            "", "s", "abc", "-1", "1d", "1.2.3", ".5", "5.", "1e3", "inf", "NaN", "10 sec",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(duration("9999h").is_err());
        assert!(duration("99999999999999999999999").is_err());
        assert!(
            duration("abc")
                .unwrap_err()
                .contains("\"abc\" is not a duration")
        );
    }

    #[test]
    fn ports_hosts_and_addresses() {
        assert_eq!(port("0").unwrap(), 0);
        assert_eq!(port("65535").unwrap(), 65535);
        assert!(port("65536").is_err());
        assert!(port("abc").unwrap_err().contains("is not a port number"));
        assert_eq!(host("localhost").unwrap(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(host("[::1]").unwrap().to_string(), "::1");
        assert_eq!(host("0.0.0.0").unwrap().to_string(), "0.0.0.0");
        assert!(host("example.com").is_err());
        assert!(host_port("redis:6379").is_ok());
        assert!(host_port("[::1]:1").is_ok());
        for bad in ["redis", ":1", "redis:", "redis:x", "a b:1"] {
            assert!(host_port(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn integers_and_words() {
        assert_eq!(integer("5", 1, 10).unwrap(), 5);
        assert!(
            integer("0", 1, 10)
                .unwrap_err()
                .contains("out of range (1-10)")
        );
        assert!(integer("-1", 0, 10).is_err());
        assert!(
            integer("0", 1, u64::MAX)
                .unwrap_err()
                .contains("too small (at least 1)")
        );
        assert!(integer("1.5", 0, 10).is_err());
        assert!(boolean("true").unwrap());
        assert!(boolean("Yes").unwrap() && boolean("on").unwrap() && boolean("1").unwrap());
        assert!(!boolean("FALSE").unwrap() && !boolean("off").unwrap() && !boolean("0").unwrap());
        assert!(boolean("maybe").is_err() && boolean("").is_err() && boolean("2").is_err());
        assert!(one_of("json", &["text", "json"]).is_ok());
        assert!(
            one_of("xml", &["text", "json"])
                .unwrap_err()
                .contains("text, json")
        );
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("http://127.0.0.1:9/v1/").unwrap(),
            "http://127.0.0.1:9/v1"
        );
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("https://").is_err());
        assert!(base_url("api.openai.com").is_err());
    }
}
