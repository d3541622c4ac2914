use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let cli = match aiproxy::cli::Cli::parse_from(&args) {
        Ok(cli) => cli,
        Err(exit) => {
            if exit.status == 0 {
                print!("{}", exit.output);
            } else {
                eprint!("{}", exit.output);
            }
            return ExitCode::from(exit.status);
        }
    };
    let _ = cli;
    ExitCode::SUCCESS
}
