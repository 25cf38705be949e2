//! `kubectl-ferrotel`: see the library's docs (`ferrotel_cli`) and docs/cli.md.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use ferrotel_cli::args::Cli;
use ferrotel_cli::error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // kube and reqwest both bring rustls; pick one provider for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(ferrotel_cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
