//! Command-line flags. Parsing only; meaning and validation live in
//! `config`.

/// What the command line asked for, before validation.
#[derive(Debug, Default)]
pub struct Cli {}

/// Parsing stopped: help or version was printed, or the usage is wrong.
#[derive(Debug)]
pub struct CliExit {
    /// Text for stdout (help, version) or stderr (usage error).
    pub output: String,
    /// 0 for help/version, 2 for a usage error.
    pub status: u8,
}

impl Cli {
    /// Parses `args` (with the program name first).
    pub fn parse_from(args: &[String]) -> Result<Cli, CliExit> {
        let _ = args;
        Ok(Cli {})
    }
}
