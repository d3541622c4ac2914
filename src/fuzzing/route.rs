//! `route`: `METHOD path` → provider prefix and route.

use crate::providers::ProviderKind;
use crate::routing::{Route, resolve, route as route_of, split_provider_prefix};

/// Input: `METHOD /path` (a path alone is a GET).
pub fn route(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (method, path) = text.split_once(' ').unwrap_or(("GET", &text));
    let (provider, rest) = split_provider_prefix(path);
    match provider {
        Some(_) => {
            assert!(rest.starts_with('/'), "rest of a prefixed path is a path");
            assert!(rest == "/" || path.ends_with(rest));
        }
        None => assert_eq!(rest, path, "unprefixed paths are untouched"),
    }
    let got = route_of(method, rest);
    assert!(!got.template().is_empty());
    match &got {
        Route::GetModel(model) | Route::GeminiGenerate { model, .. } => {
            assert!(!model.is_empty(), "empty model routed");
            assert!(rest.contains(model.as_str()));
        }
        _ => {}
    }
    if !rest.is_empty() && !rest.ends_with('/') {
        assert_eq!(
            route_of(method, &format!("{rest}/")),
            got,
            "a trailing slash changes nothing"
        );
    }
    if rest.starts_with('/') {
        for kind in ProviderKind::ALL {
            let prefixed = format!("/{}{rest}", kind.name());
            assert_eq!(
                split_provider_prefix(&prefixed),
                (Some(kind), rest),
                "every provider prefix comes off"
            );
            let (prefix, routed) = resolve(method, &prefixed);
            assert_eq!(prefix, Some(kind));
            assert!(
                routed == got || routed == Route::NotFound,
                "a prefix routes like the bare path, or nowhere"
            );
            assert!(
                !matches!(
                    routed,
                    Route::Health
                        | Route::Metrics
                        | Route::Dashboard
                        | Route::DashboardSummary
                        | Route::CacheStats
                        | Route::CacheClear
                        | Route::CacheSwitch(_)
                        | Route::LoadBalancerInstances
                        | Route::LoadBalancerMetrics
                        | Route::LoadBalancerAlgorithm
                        | Route::WebSocket
                ),
                "a prefix never reaches an operational route"
            );
        }
    }
}
