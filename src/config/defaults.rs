//! Every built-in default, written once: the resolver falls back to these
//! when no source sets a key, and the man page quotes them.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::{CacheScope, LogFormat, LogLevel};
use crate::balancer::Algorithm;
use crate::provider_kind::ProviderKind;

/// Listen host when none is configured.
pub const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Listen port when none is configured.
pub const DEFAULT_PORT: u16 = 3000;
/// The provider enabled when `model_providers` is not set: the built-in
/// mock, which needs no credentials.
pub const DEFAULT_MODEL_PROVIDER: ProviderKind = ProviderKind::Mock;
/// Worker threads, which is also the maximum number of requests in flight.
pub const DEFAULT_WORKERS: usize = 256;
/// Largest request body accepted (10 MiB); larger bodies get 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Largest request head accepted (32 KiB); larger heads get 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most header fields accepted in one request; more get 431.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Time allowed to receive a complete request head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to receive a complete request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle keep-alive connection is kept open.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed to write one response part to a slow reader (nginx's
/// `send_timeout` default).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a complete request waits for a free worker before 503.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most client connections open at once (lowered to fit `ulimit -n`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Upstream TCP/TLS connect timeout.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upstream time to first byte of the response.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest silence between two reads of an upstream (streamed) body.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Upstream silence after which a stream gets a keep-alive (Anthropic
/// `ping`, an SSE comment otherwise), well under the 60 s read timeout of
/// nginx and most load balancers.
pub const DEFAULT_STREAM_KEEPALIVE: Duration = Duration::from_secs(15);
/// Bounded drain time after SIGTERM/SIGINT.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of a failed upstream attempt (connect error, 429, 5xx).
pub const DEFAULT_REQUEST_MAX_RETRIES: u32 = 2;
/// Base of the exponential, jittered retry back-off.
pub const DEFAULT_REQUEST_BASE_DELAY: Duration = Duration::from_millis(250);
/// Time the built-in mock provider waits before answering.
pub const DEFAULT_MOCK_LATENCY: Duration = Duration::from_millis(0);
/// Delay between two streamed chunks of the built-in mock provider.
pub const DEFAULT_MOCK_CHUNK_DELAY: Duration = Duration::from_millis(0);
/// Log verbosity.
pub const DEFAULT_LOG_LEVEL: LogLevel = LogLevel::Info;
/// Log line format.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;
/// Whether the response cache is on.
pub const DEFAULT_CACHE_ENABLED: bool = true;
/// Who shares a cached answer.
pub const DEFAULT_CACHE_SCOPE: CacheScope = CacheScope::Shared;
/// Memory cache capacity in MB.
pub const DEFAULT_CACHE_MAX_SIZE_MB: u64 = 100;
/// How long a cached answer stays valid.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// Redis database number.
pub const DEFAULT_REDIS_DB: u64 = 0;
/// Whether `/metrics` and `/dashboard` are served: yes, in a build with
/// the `metrics` feature.
pub const DEFAULT_METRICS_ENABLED: bool = crate::features::METRICS.built;
/// Whether requests are spread over the instances of a provider.
pub const DEFAULT_LOAD_BALANCER_ENABLED: bool = true;
/// How instances are chosen.
pub const DEFAULT_LOAD_BALANCER_ALGORITHM: Algorithm = Algorithm::RoundRobin;
/// Time between two rounds of active health checks.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Length of a first passive ejection (3 consecutive failures).
pub const DEFAULT_EJECTION_TIME: Duration = Duration::from_secs(30);
/// Whether `GET /ws` upgrades to the WebSocket API: yes, in a build with
/// the `websocket` feature.
pub const DEFAULT_WEBSOCKET_ENABLED: bool = crate::features::WEBSOCKET.built;
/// Most WebSocket connections open at once; more get 503 before upgrading.
pub const DEFAULT_WEBSOCKET_MAX_CONNECTIONS: usize = 1000;
/// Largest WebSocket message a client may send (4 MiB), all its fragments
/// together; larger closes the connection with 1009.
pub const DEFAULT_WEBSOCKET_MAX_MESSAGE_SIZE: usize = 4 << 20;
/// Largest single WebSocket frame a client may send (1 MiB).
pub const DEFAULT_WEBSOCKET_MAX_FRAME_SIZE: usize = 1 << 20;
/// Requests in flight on one WebSocket connection; more get an error frame.
pub const DEFAULT_WEBSOCKET_MAX_IN_FLIGHT: usize = 64;
/// Bytes waiting for a WebSocket client that does not read (16 MiB);
/// past it the connection is closed with 1008.
pub const DEFAULT_WEBSOCKET_MAX_QUEUED_BYTES: usize = 16 << 20;
/// Interval of the server's `heartbeat` messages.
pub const DEFAULT_WEBSOCKET_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Silence after which a WebSocket connection with nothing in flight is
/// closed with 1001.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// openai-custom upstream; includes the version path like the OpenAI SDK.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// claude-custom upstream root; `/v1` is appended when missing.
pub const DEFAULT_CLAUDE_BASE_URL: &str = "https://api.anthropic.com";
/// gemini-cli: Google Code Assist root (`{base}/v1internal:{method}`).
pub const DEFAULT_GEMINI_BASE_URL: &str = "https://cloudcode-pa.googleapis.com";
/// gemini-cli: Google's OAuth token endpoint.
pub const DEFAULT_GEMINI_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// gemini-cli: the Gemini CLI's public installed-app OAuth client id.
/// Refresh tokens issued to the Gemini CLI only refresh with this client.
pub const DEFAULT_GEMINI_CLIENT_ID: &str =
    "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com";
/// gemini-cli: the installed-app client secret published in the Gemini
/// CLI's source (google-gemini/gemini-cli, `code_assist/oauth2.ts`); an
/// installed application's secret is not confidential.
pub const DEFAULT_GEMINI_CLIENT_SECRET: &str = "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";
/// kiro-api: API root; `{region}` is the credentials' region.
pub const DEFAULT_KIRO_BASE_URL: &str = "https://q.{region}.amazonaws.com";
/// kiro-api: token refresh of social (Google/GitHub) logins.
pub const DEFAULT_KIRO_REFRESH_URL: &str =
    "https://prod.{region}.auth.desktop.kiro.dev/refreshToken";
/// kiro-api: token refresh of Builder ID / IAM Identity Center logins.
pub const DEFAULT_KIRO_REFRESH_IDC_URL: &str = "https://oidc.{region}.amazonaws.com/token";
/// kiro-api: Kiro IDE version announced in the user agent.
pub const DEFAULT_KIRO_VERSION: &str = "0.11.63";
/// qwen-api: Qwen OAuth token endpoint.
pub const DEFAULT_QWEN_TOKEN_URL: &str = "https://chat.qwen.ai/api/v1/oauth2/token";
/// qwen-api: add the dummy `ext` tool Qwen Code sends, without which the
/// model emits stray tokens in streams.
pub const DEFAULT_QWEN_EXT_TOOL: bool = true;
/// qwen-api: base URL when the credentials carry no `resource_url`.
pub const DEFAULT_QWEN_BASE_URL: &str = "https://portal.qwen.ai/v1";
/// Whether this process joins a cluster.
pub const DEFAULT_CLUSTER_ENABLED: bool = false;
/// Interval between two heartbeats to every cluster member.
pub const DEFAULT_CLUSTER_HEARTBEAT_INTERVAL: Duration =
    crate::cluster::membership::DEFAULT_HEARTBEAT;
/// Silence after which a cluster member is suspect.
pub const DEFAULT_CLUSTER_SUSPECT_AFTER: Duration =
    crate::cluster::membership::DEFAULT_SUSPECT_AFTER;
/// Silence after which a cluster member is dead.
pub const DEFAULT_CLUSTER_DEAD_AFTER: Duration = crate::cluster::membership::DEFAULT_DEAD_AFTER;
/// How long a dead cluster member stays listed.
pub const DEFAULT_CLUSTER_FORGET_AFTER: Duration = crate::cluster::membership::DEFAULT_FORGET_AFTER;
