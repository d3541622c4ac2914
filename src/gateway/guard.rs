//! What can be decided from a request head alone: route, key, `Host`,
//! media type, provider prefix, and which browser origins may read the
//! answer. The server asks before it accepts a single body byte (so an
//! unauthenticated client cannot make it read, buffer or wait for a
//! body), and the handler asks again for callers that bypass the server.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::auth::{self, Access};
use crate::protocol::{self, Protocol};
use crate::routing::{self, Route};
use crate::server::{Head, Rejection};

use super::{Failure, State};

/// Longest client-chosen text (a path, a method, a model name) echoed into
/// an error message or a log line.
pub(super) const MAX_ECHO_BYTES: usize = 256;

/// Headers a browser may send cross-origin (the SDKs' own, no others).
pub(super) const CORS_ALLOW_HEADERS: &str = "Content-Type, Authorization, x-api-key, \
     x-goog-api-key, anthropic-version, anthropic-beta, anthropic-dangerous-direct-browser-access, \
     Model-Provider, Cache-Control, X-Requested-With, Accept";

/// A head that cannot be served, with the protocol to answer it in.
pub(super) struct Refusal {
    pub proto: Protocol,
    pub failure: Failure,
    pub route: &'static str,
    /// `Allow` for a 405.
    pub allow: Option<&'static str>,
}

/// Checks a head against the running configuration.
pub(super) fn check(state: &State, head: &Head) -> Result<(), Box<Refusal>> {
    let (prefix, route) = routing::resolve(head.method(), head.path());
    let proto = super::client_protocol(&route, head);
    let refuse = |status: u16, message: String| {
        Err(Box::new(Refusal {
            proto,
            failure: Failure::new(status, message),
            route: route.template(),
            allow: None,
        }))
    };
    let config = &state.config;
    if config.api_keys.is_empty()
        && let Some(host) = head.host()
        && !is_local_host(host)
    {
        // DNS rebinding: a page on evil.example whose name now resolves to
        // 127.0.0.1 reaches this port with its own name in `Host`. Without
        // a key, only names that cannot be rebound are served.
        return refuse(
            403,
            format!(
                "Host {} is not served without an API key: use localhost or an IP address, \
                 or configure --api-key",
                echo(host, MAX_ECHO_BYTES)
            ),
        );
    }
    match route {
        Route::NotFound => {
            return refuse(
                404,
                format!(
                    "no route for {} {}",
                    echo(head.method(), MAX_ECHO_BYTES),
                    echo(head.path(), MAX_ECHO_BYTES)
                ),
            );
        }
        Route::MethodNotAllowed(allowed) => {
            return Err(Box::new(Refusal {
                proto,
                failure: Failure::new(
                    405,
                    format!("use {allowed} for {}", echo(head.path(), MAX_ECHO_BYTES)),
                ),
                route: route.template(),
                allow: Some(allowed),
            }));
        }
        Route::Preflight | Route::Health | Route::Metrics | Route::Dashboard => return Ok(()),
        Route::DashboardSummary => return Ok(()),
        _ => {}
    }
    let websocket = route == Route::WebSocket;
    if websocket && !config.websocket.enabled {
        return refuse(
            404,
            "the WebSocket API is turned off on this gateway (--websocket-enabled=false)".into(),
        );
    }
    let access = if websocket {
        let token = auth::presented_token(head);
        auth::access_of(token.as_deref(), &config.api_keys, &config.admin_api_keys)
    } else {
        auth::access(head, &config.api_keys, &config.admin_api_keys)
    };
    if access == Access::Denied {
        let ways = if websocket { "`?token=`, " } else { "" };
        return refuse(
            401,
            format!(
                "Unauthorized: API key is invalid or missing. Send it as {ways}\
                 `Authorization: Bearer <key>`, `x-api-key`, `x-goog-api-key` or `?key=`."
            ),
        );
    }
    if websocket && config.api_keys.is_empty() && !websocket_origin_allowed(config, head) {
        // Browsers let any page open a WebSocket anywhere (no CORS, no
        // preflight): without a key, the Origin is all that tells the
        // user's own pages from a site they merely visit.
        return refuse(
            403,
            format!(
                "Origin {} may not open a WebSocket on a gateway without an API key: \
                 list it in --cors-origins, or configure --api-key",
                echo(head.header("origin").unwrap_or(""), MAX_ECHO_BYTES)
            ),
        );
    }
    if route.needs_admin() && access != Access::Admin {
        // Reached without a key only when client keys are not required.
        let status = if auth::presented_key(head).is_some() {
            403
        } else {
            401
        };
        return refuse(
            status,
            "Forbidden: this endpoint changes the gateway for every client and needs an \
             admin key (--admin-api-key)."
                .into(),
        );
    }
    if let Some(kind) = prefix
        && !state.registry.is_enabled(kind)
    {
        return refuse(
            400,
            format!("Provider {kind} is not enabled on this gateway."),
        );
    }
    if takes_json(&route) && !is_json(head.header("content-type")) {
        // A browser sends `text/plain` cross-origin without a preflight;
        // insisting on JSON makes every cross-site call need one, which
        // `--cors-origins` then decides.
        return refuse(415, "Content-Type must be application/json".into());
    }
    Ok(())
}

/// The answer the server sends for a refused head.
pub(super) fn rejection(refusal: &Refusal, cors: Option<&str>) -> Rejection {
    let body = protocol::error_body(
        refusal.proto,
        refusal.failure.status,
        &refusal.failure.message,
    );
    let mut headers = vec![("Content-Type", "application/json".to_owned())];
    if let Some(allowed) = refusal.allow {
        headers.push(("Allow", allowed.to_owned()));
    }
    if let Some(origin) = cors {
        headers.push(("Access-Control-Allow-Origin", origin.to_owned()));
        headers.push(("Vary", "Origin".to_owned()));
    }
    Rejection {
        status: refusal.failure.status,
        headers,
        body,
        route: refusal.route,
    }
}

/// The origin to allow in `Access-Control-Allow-Origin`, if the request
/// comes from a page whose origin is listed in `--cors-origins`.
pub(super) fn allowed_origin<'h>(origins: &[String], head: &'h Head) -> Option<&'h str> {
    let origin = head.header("origin")?;
    origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
        .then_some(origin)
}

/// Whether a browser page may open a WebSocket on a gateway that has no
/// key: no `Origin` (not a browser), the gateway's own origin, or one
/// listed in `--cors-origins`.
fn websocket_origin_allowed(config: &crate::config::Config, head: &Head) -> bool {
    let Some(origin) = head.header("origin") else {
        return true;
    };
    if allowed_origin(&config.cors_origins, head).is_some() {
        return true;
    }
    let authority = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    head.host()
        .is_some_and(|host| host.trim().eq_ignore_ascii_case(authority))
}

fn takes_json(route: &Route) -> bool {
    matches!(
        route,
        Route::OpenAiChat
            | Route::Responses
            | Route::AnthropicMessages
            | Route::AnthropicCountTokens
            | Route::GeminiGenerate { .. }
            | Route::LoadBalancerAlgorithm
    )
}

/// `application/json`, with or without parameters, any case.
fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/json")
    })
}

/// Whether `Host` names this machine in a way DNS cannot rebind: an IP
/// literal, `localhost` or a `.localhost` name (RFC 6761 keeps those local).
fn is_local_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.len().checked_sub(".localhost".len()).is_some_and(|i| {
            name.is_char_boundary(i) && name[i..].eq_ignore_ascii_case(".localhost")
        })
}

/// `raw`, a string the client chose, made fit to quote in an error message
/// or a log line: at most about `max` bytes (cut with `...`), printable
/// ASCII kept and everything else escaped (`\u{1b}`, `\u{e9}`), so
/// neither a 32 KB path nor control characters reach a log.
pub(super) fn echo(raw: &str, max: usize) -> Cow<'_, str> {
    let plain = |c: char| (c.is_ascii_graphic() && c != '\\') || c == ' ';
    if raw.len() <= max && raw.chars().all(plain) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(max.min(raw.len()) + 16);
    for c in raw.chars() {
        if out.len() >= max {
            out.push_str("...");
            break;
        }
        if plain(c) {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_dns_cannot_rebind_are_local() {
        for ok in [
            "localhost",
            "localhost:3000",
            "LOCALHOST.",
            "api.localhost:8080",
            "127.0.0.1",
            "127.0.0.1:3000",
            "[::1]:3000",
            "[::1]",
            "10.0.0.5:3000",
        ] {
            assert!(is_local_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:3000",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "[evil]:80",
            "",
        ] {
            assert!(!is_local_host(bad), "{bad}");
        }
    }

    #[test]
    fn json_media_type_with_parameters() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(Some("application/jsonx")));
        assert!(!is_json(None));
    }

    #[test]
    fn echoed_text_is_bounded_and_printable() {
        let long = "a".repeat(10_000);
        assert!(echo(&long, MAX_ECHO_BYTES).len() <= MAX_ECHO_BYTES + 3);
        assert_eq!(echo("a\u{1b}b", MAX_ECHO_BYTES), "a\\u{1b}b");
    }
}
