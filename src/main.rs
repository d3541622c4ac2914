//! The `aiproxy` command: parse flags, load and validate the
//! configuration, run the gateway. Everything else lives in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use aiproxy::cli::Cli;
use aiproxy::config::Config;

fn main() -> ExitCode {
    // `std::env::args()` and `vars()` panic on non-UTF-8 text; a bad
    // argument is a usage error and a bad variable is skipped instead.
    let Some(args) = std::env::args_os()
        .map(|a| a.into_string().ok())
        .collect::<Option<Vec<_>>>()
    else {
        eprintln!("aiproxy: an argument is not valid UTF-8\nRun 'aiproxy --help' for usage.");
        return ExitCode::from(2);
    };
    let cli = match Cli::parse_from(&args) {
        Ok(cli) => cli,
        Err(exit) if exit.status == 0 => {
            print!("{}", exit.output);
            return ExitCode::SUCCESS;
        }
        Err(exit) => {
            eprint!("{}", exit.output);
            return ExitCode::from(exit.status);
        }
    };
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let config = match Config::load(&cli, &env) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("aiproxy: {err}");
            return ExitCode::from(2);
        }
    };
    // From here on every line on stderr follows --log-format.
    aiproxy::log::configure(config.log.level, config.log.format);
    for warning in &config.warnings {
        aiproxy::log::warn(warning);
    }
    if cli.check_config {
        return match aiproxy::check(&config) {
            Ok(warnings) => {
                for warning in &warnings {
                    aiproxy::log::warn(warning);
                }
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("aiproxy: {err}");
                ExitCode::from(err.exit_code())
            }
        };
    }
    let reload = move || Config::load(&cli, &env).map_err(aiproxy::Error::from);
    match aiproxy::run(config, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("aiproxy: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
