//! Command-line flags: parsing only. Meaning, defaults and validation live
//! in `config`, which merges these flags over the environment and the
//! config file.
//!
//! [`Flags`] declares every flag to argh, which writes the help text and
//! rejects unknown flags, missing values and repeated options. The values
//! reach `config` as the (flag, value) pairs in [`Cli::settings`], which it
//! maps to keys through its key table, so a new flag is its key in that
//! table plus its field here, and nothing else.
//!
//! argh 0.1 only understands `--flag value`, so [`Cli::parse_from`]
//! normalises the argument list first:
//!
//! * `--flag=value` becomes `--flag value`;
//! * a boolean switch other than [`PLAIN_SWITCHES`] may stand alone (on),
//!   or take `=true|false` or a following `true|false` word. argh cannot
//!   express an explicit `false`, so the normaliser takes those switches
//!   out of the argument list and records their value itself (last
//!   occurrence wins).

// The flags' doc comments are the --help text, where a URL is plain text.
#![allow(rustdoc::bare_urls)]

use argh::{ArgsInfo, FromArgs};

/// Switches that never take a value; every other switch is a setting that
/// accepts `true`/`false` as well as standing alone.
pub const PLAIN_SWITCHES: &[&str] = &["--check-config", "--version", "--help"];

/// The flag naming the config file, which is no config key itself.
const CONFIG_FLAG: &str = "--config";

/// The parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cli {
    /// `--config`: the YAML file to read settings from.
    pub config: Option<String>,
    /// `--check-config`: validate, report and exit.
    pub check_config: bool,
    /// Every other option and switch given, as (flag, value) in
    /// command-line order; a switch's value is `true` or `false`.
    pub settings: Vec<(&'static str, String)>,
}

// The doc comment below is the first line of `--help`. The fields exist
// for argh: `Cli::parse_from` reads the settings from the argument list.
/// AI API gateway: OpenAI, Anthropic and Gemini clients to any provider.
#[derive(FromArgs, ArgsInfo, Debug, Default, PartialEq, Eq)]
#[argh(
    name = "aiproxy",
    help_triggers("-h", "--help", "help"),
    note = "Every option also accepts the = form, as in --port=3001. The switches --insecure-no-auth and \
            --log-prompts may stand alone or take true/false (--log-prompts=false).",
    note = "Durations are seconds or a number with a unit: 500ms, 30s, 5m, 1h. Sizes are \
            bytes.",
    note = "Precedence: built-in defaults < config file < AIPROXY_* environment < flags. \
            Every config key has an environment name: AIPROXY_ plus its path in upper \
            snake case (AIPROXY_PORT, AIPROXY_LIMITS_MAX_BODY_BYTES). See aiproxy(1).",
    error_code(0, "clean shutdown, or --help, --version, --check-config succeeded"),
    error_code(1, "runtime failure"),
    error_code(2, "invalid command line or configuration")
)]
pub struct Flags {
    /// read settings from this YAML file (default: none; AIPROXY_CONFIG)
    #[argh(option, arg_name = "file")]
    pub config: Option<String>,

    /// validate the configuration, print "configuration OK" and exit 0
    #[argh(switch)]
    pub check_config: Option<bool>,

    /// listen address: an IP address or localhost (default 127.0.0.1)
    #[argh(option, arg_name = "addr")]
    pub host: Option<String>,

    /// listen port, 0 for any free port (default 3000)
    #[argh(option, arg_name = "port")]
    pub port: Option<String>,

    /// key clients must present; comma list for several (default: none,
    /// which is only allowed on a loopback address)
    #[argh(option, arg_name = "keys")]
    pub api_key: Option<String>,

    /// keys for the admin endpoints (/cache/clear, /cache/enable,
    /// /cache/disable); comma list; an admin key is also a client key
    /// (default: none, which lets every client key use them)
    #[argh(option, arg_name = "keys")]
    pub admin_api_key: Option<String>,

    /// allow listening on a non-loopback address without --api-key
    /// (default false)
    #[argh(switch)]
    pub insecure_no_auth: Option<bool>,

    /// browser origins allowed to call the gateway, comma list (default:
    /// none, so no CORS headers are sent)
    #[argh(option, arg_name = "origins")]
    pub cors_origins: Option<String>,

    /// response cache on or off; takes an optional true|false (default true)
    #[argh(switch)]
    pub cache_enabled: Option<bool>,

    /// memory cache capacity in MB (default 100)
    #[argh(option, arg_name = "mb")]
    pub cache_max_size: Option<String>,

    /// seconds a cached answer stays valid (default 300)
    #[argh(option, arg_name = "seconds")]
    pub cache_ttl: Option<String>,

    /// who shares a cached answer: shared (every client key) or per_key
    /// (each client key has its own answers) (default shared)
    #[argh(option, arg_name = "scope")]
    pub cache_scope: Option<String>,

    /// shared Redis server, a second cache tier for every node: host:port
    /// or redis:// URL (default: none)
    #[argh(option, arg_name = "addr")]
    pub redis_addr: Option<String>,

    /// password of the Redis server (default: none)
    #[argh(option, arg_name = "password")]
    pub redis_password: Option<String>,

    /// database number on the Redis server (default 0)
    #[argh(option, arg_name = "n")]
    pub redis_db: Option<String>,

    /// metrics (/metrics) and the dashboard on or off; takes an optional
    /// true|false (default true; false in a build without the metrics
    /// feature)
    #[argh(switch)]
    pub metrics_enabled: Option<bool>,

    /// extra port serving only /metrics (default: none; /metrics is always
    /// on the main port too)
    #[argh(option, arg_name = "port")]
    pub metrics_port: Option<String>,

    /// the WebSocket API at GET /ws on or off; takes an optional true|false
    /// (default true; false in a build without the websocket feature)
    #[argh(switch)]
    pub websocket_enabled: Option<bool>,

    /// most WebSocket connections open at once; more get 503 (default 1000)
    #[argh(option, arg_name = "n")]
    pub websocket_max_connections: Option<String>,

    /// largest WebSocket message a client may send, in bytes; larger closes
    /// the connection with 1009 (default 4194304)
    #[argh(option, arg_name = "bytes")]
    pub websocket_max_message_size: Option<String>,

    /// largest WebSocket frame a client may send, in bytes (default 1048576)
    #[argh(option, arg_name = "bytes")]
    pub websocket_max_frame_size: Option<String>,

    /// requests in flight on one WebSocket connection (default 64)
    #[argh(option, arg_name = "n")]
    pub websocket_max_in_flight: Option<String>,

    /// bytes waiting for a WebSocket client that does not read; past it the
    /// connection is closed with 1008 (default 16777216)
    #[argh(option, arg_name = "bytes")]
    pub websocket_max_queued_bytes: Option<String>,

    /// interval of the server's WebSocket heartbeat messages (default 30s)
    #[argh(option, arg_name = "duration")]
    pub websocket_heartbeat_interval: Option<String>,

    /// silence after which an idle WebSocket connection is closed with
    /// 1001 (default 90s)
    #[argh(option, arg_name = "duration")]
    pub websocket_idle_timeout: Option<String>,

    /// join a cluster: heartbeats over UDP on the port of --node-address,
    /// admin changes reach every node; takes an optional true|false
    /// (default false)
    #[argh(switch)]
    pub cluster_enabled: Option<bool>,

    /// this node's id, unique in the cluster (default: the host name)
    #[argh(option, arg_name = "id")]
    pub node_id: Option<String>,

    /// host:port the cluster's UDP socket binds; HTTP stays on TCP
    /// (default: the listen address)
    #[argh(option, arg_name = "addr")]
    pub node_address: Option<String>,

    /// host:port of nodes to contact first, comma list; names are looked
    /// up again until they answer (default: none)
    #[argh(option, arg_name = "list")]
    pub seed_nodes: Option<String>,

    /// secret shared by every node, authenticating each datagram; at least
    /// 16 bytes, required unless the node address is loopback (default:
    /// none)
    #[argh(option, arg_name = "secret")]
    pub cluster_secret: Option<String>,
    /// the provider pools file: several instances (accounts, endpoints)
    /// per provider, JSON or YAML (default: none, one instance per
    /// provider from the flags)
    #[argh(option, arg_name = "file")]
    pub provider_pools_file: Option<String>,

    /// spread requests over the instances of a provider; takes an optional
    /// true|false; off, the first healthy instance serves, with failover
    /// (default true)
    #[argh(switch)]
    pub load_balancer_enabled: Option<bool>,

    /// how an instance is chosen: round_robin, least_requests, weighted,
    /// random or ip_hash (default round_robin)
    #[argh(option, arg_name = "name")]
    pub load_balancer_algorithm: Option<String>,

    /// proxies whose X-Forwarded-For is believed for ip_hash, comma list
    /// of addresses or CIDR blocks (default: none)
    #[argh(option, arg_name = "cidrs")]
    pub trusted_proxies: Option<String>,

    /// enabled providers, comma list, the first is the default: openai-custom,
    /// claude-custom, gemini-cli, kiro-api, qwen-api, mock (default mock)
    #[argh(option, arg_name = "list")]
    pub model_provider: Option<String>,

    /// API key of the openai-custom upstream (required when it is enabled)
    #[argh(option, arg_name = "key")]
    pub openai_api_key: Option<String>,

    /// openai-custom base URL including the version path (default
    /// https://api.openai.com/v1)
    #[argh(option, arg_name = "url")]
    pub openai_base_url: Option<String>,

    /// API key of the claude-custom upstream (required when it is enabled)
    #[argh(option, arg_name = "key")]
    pub claude_api_key: Option<String>,

    /// claude-custom base URL, the API root (default
    /// https://api.anthropic.com)
    #[argh(option, arg_name = "url")]
    pub claude_base_url: Option<String>,

    /// gemini-cli credentials written by the Gemini CLI login (default
    /// ~/.gemini/oauth_creds.json)
    #[argh(option, arg_name = "file")]
    pub gemini_oauth_creds_file: Option<String>,

    /// the Google Cloud project for gemini-cli (default: discovered with
    /// loadCodeAssist, onboarding the account when needed)
    #[argh(option, arg_name = "id")]
    pub project_id: Option<String>,

    /// gemini-cli Code Assist root (default
    /// https://cloudcode-pa.googleapis.com)
    #[argh(option, arg_name = "url")]
    pub gemini_base_url: Option<String>,

    /// kiro-api credentials written by the Kiro IDE, or the generic
    /// client_id/client_secret/token_url/refresh_token form (default
    /// ~/.aws/sso/cache/kiro-auth-token.json)
    #[argh(option, arg_name = "file")]
    pub kiro_oauth_creds_file: Option<String>,

    /// kiro-api API root; {region} is replaced by the credentials' region
    /// (default https://q.{region}.amazonaws.com)
    #[argh(option, arg_name = "url")]
    pub kiro_base_url: Option<String>,

    /// qwen-api credentials written by the Qwen Code login (default
    /// ~/.qwen/oauth_creds.json)
    #[argh(option, arg_name = "file")]
    pub qwen_oauth_creds_file: Option<String>,

    /// qwen-api base URL; /v1 is appended when missing (default: from the
    /// credentials' resource_url, else https://portal.qwen.ai/v1)
    #[argh(option, arg_name = "url")]
    pub qwen_base_url: Option<String>,

    /// pause between streamed chunks of the mock provider (default 0)
    #[argh(option, arg_name = "duration")]
    pub mock_chunk_delay: Option<String>,

    /// time the mock provider waits before answering, to simulate a slow
    /// model (default 0)
    #[argh(option, arg_name = "duration")]
    pub mock_latency: Option<String>,

    /// worker threads, the maximum number of requests in flight, 1 to
    /// 65536 (default 256)
    #[argh(option, arg_name = "n")]
    pub workers: Option<String>,

    /// largest request body in bytes; larger gets 413 (default 10485760)
    #[argh(option, arg_name = "bytes")]
    pub max_body_bytes: Option<String>,

    /// largest request head in bytes; larger gets 431 (default 32768)
    #[argh(option, arg_name = "bytes")]
    pub max_header_bytes: Option<String>,

    /// time allowed to receive a request head (default 10s)
    #[argh(option, arg_name = "duration")]
    pub header_timeout: Option<String>,

    /// time allowed to receive a request body (default 30s)
    #[argh(option, arg_name = "duration")]
    pub body_timeout: Option<String>,

    /// how long an idle keep-alive connection stays open (default 60s)
    #[argh(option, arg_name = "duration")]
    pub idle_timeout: Option<String>,

    /// time allowed to write one response part to a slow client; past it
    /// the connection is closed (default 60s)
    #[argh(option, arg_name = "duration")]
    pub send_timeout: Option<String>,

    /// longest a request waits for a free worker before 503 (default 30s)
    #[argh(option, arg_name = "duration")]
    pub queue_timeout: Option<String>,

    /// most client connections open at once; at the bound the oldest idle
    /// ones are closed (default 10000, lowered to fit ulimit -n)
    #[argh(option, arg_name = "n")]
    pub max_connections: Option<String>,

    /// upstream connect timeout (default 10s)
    #[argh(option, arg_name = "duration")]
    pub upstream_connect_timeout: Option<String>,

    /// upstream time to first byte (default 120s)
    #[argh(option, arg_name = "duration")]
    pub upstream_timeout: Option<String>,

    /// longest gap between streamed upstream chunks (default 120s)
    #[argh(option, arg_name = "duration")]
    pub upstream_idle_timeout: Option<String>,

    /// upstream silence after which a stream gets a keep-alive; 0 turns
    /// them off (default 15s)
    #[argh(option, arg_name = "duration")]
    pub stream_keepalive: Option<String>,

    /// drain time for in-flight requests after SIGTERM (default 30s)
    #[argh(option, arg_name = "duration")]
    pub shutdown_timeout: Option<String>,

    /// retries of a failed upstream attempt (default 2)
    #[argh(option, arg_name = "n")]
    pub request_max_retries: Option<String>,

    /// base of the exponential retry back-off (default 250ms)
    #[argh(option, arg_name = "duration")]
    pub request_base_delay: Option<String>,

    /// log verbosity: error, warn, info or debug (default info)
    #[argh(option, arg_name = "level")]
    pub log_level: Option<String>,

    /// log line format: text or json (default text)
    #[argh(option, arg_name = "format")]
    pub log_format: Option<String>,

    /// log prompts and answers, which may be confidential (default false)
    #[argh(switch)]
    pub log_prompts: Option<bool>,

    /// print the version and the optional features built in, and exit
    #[argh(switch, short = 'V')]
    pub version: Option<bool>,
}

/// Parsing stopped: help or version was printed, or the usage is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct CliExit {
    /// Text for stdout (help, version) or stderr (usage error).
    pub output: String,
    /// 0 for help/version, 2 for a usage error.
    pub status: u8,
}

impl CliExit {
    fn usage(message: &str) -> Self {
        let message = message.trim_end();
        Self {
            output: format!("aiproxy: {message}\nRun 'aiproxy --help' for usage.\n"),
            status: 2,
        }
    }
}

/// Parses a `true`/`false` switch value.
fn parse_switch_value(flag: &str, value: &str) -> Result<bool, CliExit> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(CliExit::usage(&format!(
            "{flag}: {value:?} is not true or false"
        ))),
    }
}

/// The argument list argh will see, and every (flag, value) given, in
/// order.
struct Normalised {
    args: Vec<String>,
    given: Vec<(&'static str, String)>,
}

/// Rewrites `args` (without the program name) into the form argh accepts
/// and records the value of every option and switch.
fn normalise(args: &[String]) -> Result<Normalised, CliExit> {
    let info = Flags::get_args_info();
    let flags_of = |switch: bool| -> Vec<&'static str> {
        info.flags
            .iter()
            .filter(|f| matches!(f.kind, argh::FlagInfoKind::Switch) == switch)
            .map(|f| f.long)
            .filter(|long| !PLAIN_SWITCHES.contains(long))
            .collect()
    };
    let (takes_value, valued_switches) = (flags_of(false), flags_of(true));
    let mut out = Vec::with_capacity(args.len());
    let mut given = Vec::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            out.push(arg.clone());
            out.extend(iter.cloned());
            break;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value)),
            _ => (arg.as_str(), None),
        };
        if let Some(&switch) = valued_switches.iter().find(|s| **s == name) {
            let value = match inline {
                Some(value) => parse_switch_value(switch, value)?,
                None => match iter.next_if(|next| *next == "true" || *next == "false") {
                    Some(word) => word == "true",
                    None => true,
                },
            };
            given.push((switch, value.to_string()));
        } else if let Some(&option) = takes_value.iter().find(|o| **o == name) {
            out.push(name.to_owned());
            // The value is the next word whatever it looks like, as argh
            // would take it; do not normalise it. Without one, argh
            // reports the missing value.
            let value = inline.map(str::to_owned).or_else(|| iter.next().cloned());
            if let Some(value) = value {
                out.push(value.clone());
                given.push((option, value));
            }
        } else if inline.is_some() && PLAIN_SWITCHES.contains(&name) {
            return Err(CliExit::usage(&format!("{name} does not take a value")));
        } else {
            out.push(name.to_owned());
            if let Some(value) = inline {
                // Unknown `--flag=value`: argh reports the flag name.
                out.push(value.to_owned());
            }
        }
    }
    Ok(Normalised { args: out, given })
}

/// The `--version` line: the package version and the Cargo features
/// this binary was built with (`aiproxy 0.1.0 (features: redis metrics)`).
pub fn version() -> String {
    format!(
        "aiproxy {} (features: {})\n",
        env!("CARGO_PKG_VERSION"),
        crate::features::built()
    )
}

impl Cli {
    /// Parses `args` (with the program name first).
    ///
    /// Returns [`CliExit`] with status 0 and the text for stdout for
    /// `--help`, `-h`, `help`, `--version` and `-V`, and status 2 with a
    /// message for stderr when the usage is wrong.
    pub fn parse_from(args: &[String]) -> Result<Cli, CliExit> {
        let rest = args.get(1..).unwrap_or_default();
        let Normalised {
            args: normal,
            given,
        } = normalise(rest)?;
        let strs: Vec<&str> = normal.iter().map(String::as_str).collect();
        let flags = match Flags::from_args(&["aiproxy"], &strs) {
            Ok(flags) => flags,
            Err(exit) if exit.status.is_ok() => {
                return Err(CliExit {
                    output: exit.output,
                    status: 0,
                });
            }
            Err(exit) => return Err(CliExit::usage(&exit.output)),
        };
        if flags.version == Some(true) {
            return Err(CliExit {
                output: version(),
                status: 0,
            });
        }
        Ok(Cli {
            config: flags.config,
            check_config: flags.check_config == Some(true),
            settings: given
                .into_iter()
                .filter(|(flag, _)| *flag != CONFIG_FLAG)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, CliExit> {
        let mut all = vec!["aiproxy".to_owned()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        Cli::parse_from(&all)
    }

    /// The last value given for `flag`.
    fn value<'a>(cli: &'a Cli, flag: &str) -> Option<&'a str> {
        cli.settings
            .iter()
            .rev()
            .find(|(f, _)| *f == flag)
            .map(|(_, v)| v.as_str())
    }

    fn switch(args: &[&str], flag: &str) -> Option<bool> {
        value(&parse(args).unwrap(), flag).map(|v| v == "true")
    }

    #[test]
    fn no_arguments_is_all_none() {
        assert_eq!(parse(&[]).unwrap(), Cli::default());
    }

    #[test]
    fn equals_and_space_forms_are_the_same() {
        let a = parse(&["--port=3001", "--api-key=a,b", "--config=x.yaml"]).unwrap();
        let b = parse(&["--port", "3001", "--api-key", "a,b", "--config", "x.yaml"]).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.settings,
            [
                ("--port", "3001".to_owned()),
                ("--api-key", "a,b".to_owned())
            ]
        );
        assert_eq!(a.config.as_deref(), Some("x.yaml"), "not a setting");
        assert!(!a.check_config);
        assert!(parse(&["--check-config"]).unwrap().check_config);
    }

    #[test]
    fn only_the_first_equals_splits() {
        let cli = parse(&["--openai-base-url=http://h/v1?a=b"]).unwrap();
        assert_eq!(value(&cli, "--openai-base-url"), Some("http://h/v1?a=b"));
        let cli = parse(&["--api-key="]).unwrap();
        assert_eq!(value(&cli, "--api-key"), Some(""));
    }

    #[test]
    fn option_value_may_start_with_a_dash() {
        let cli = parse(&["--api-key", "--log-prompts"]).unwrap();
        assert_eq!(cli.settings, [("--api-key", "--log-prompts".to_owned())]);
    }

    #[test]
    fn valued_switch_forms() {
        let flag = "--log-prompts";
        assert_eq!(switch(&["--log-prompts"], flag), Some(true));
        assert_eq!(switch(&["--log-prompts=true"], flag), Some(true));
        assert_eq!(switch(&["--log-prompts=false"], flag), Some(false));
        assert_eq!(switch(&["--log-prompts", "false"], flag), Some(false));
        assert_eq!(switch(&["--log-prompts", "true"], flag), Some(true));
        let cli = parse(&["--insecure-no-auth", "--port", "1"]).unwrap();
        assert_eq!(
            cli.settings,
            [
                ("--insecure-no-auth", "true".to_owned()),
                ("--port", "1".to_owned())
            ]
        );
        assert_eq!(
            switch(&["--log-prompts=false", "--log-prompts"], flag),
            Some(true),
            "last occurrence wins"
        );
    }

    #[test]
    fn a_repeated_option_is_a_usage_error() {
        assert_eq!(parse(&["--port=1", "--port=2"]).unwrap_err().status, 2);
    }

    #[test]
    fn bad_switch_value_is_a_usage_error() {
        let exit = parse(&["--log-prompts=yes"]).unwrap_err();
        assert_eq!(exit.status, 2);
        assert!(exit.output.contains("--log-prompts"), "{}", exit.output);
        assert_eq!(parse(&["--check-config=true"]).unwrap_err().status, 2);
    }

    #[test]
    fn help_and_version_exit_zero() {
        for arg in ["--help", "-h", "help"] {
            let exit = parse(&[arg]).unwrap_err();
            assert_eq!(exit.status, 0, "{arg}");
            assert!(exit.output.starts_with("Usage: aiproxy"), "{}", exit.output);
        }
        for arg in ["--version", "-V"] {
            let exit = parse(&[arg]).unwrap_err();
            assert_eq!(exit.status, 0);
            assert_eq!(exit.output, version());
            assert!(exit.output.starts_with(&format!(
                "aiproxy {} (features: ",
                env!("CARGO_PKG_VERSION")
            )));
        }
    }

    #[test]
    fn unknown_flag_and_missing_value_are_usage_errors() {
        for args in [&["--bogus"][..], &["--bogus=1"], &["--port"], &["stray"]] {
            let exit = parse(args).unwrap_err();
            assert_eq!(exit.status, 2, "{args:?}");
            assert!(exit.output.starts_with("aiproxy: "), "{}", exit.output);
            assert!(exit.output.contains("aiproxy --help"), "{}", exit.output);
        }
        assert!(
            parse(&["--bogus=1"])
                .unwrap_err()
                .output
                .contains("--bogus")
        );
    }

    #[test]
    fn every_option_and_switch_is_recorded() {
        for flag in Flags::get_args_info().flags {
            let name = flag.long;
            if PLAIN_SWITCHES.contains(&name) || name == CONFIG_FLAG {
                continue;
            }
            assert_eq!(
                parse(&[&format!("{name}=false")]).unwrap().settings,
                [(name, "false".to_owned())],
                "{name}"
            );
        }
    }
}
