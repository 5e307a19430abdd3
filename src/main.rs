//! The rackboot binary: parses the command line, sets up logging and hands the
//! command to `rackboot::cli`. Everything else lives in the library (`src/lib.rs`).

use clap::Parser as _;
use rackboot::cli;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    if !matches!(cli.command, cli::Command::Serve) {
        // A listing piped into `head` ends quietly, as other Unix tools do, instead of
        // a panic on the closed pipe. Not for `serve`: its sockets must see EPIPE.
        // SAFETY: at start, before any thread; SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rackboot: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error may quote what a BMC or a file said: no control characters.
            eprintln!(
                "rackboot: {}",
                rackboot::text::for_terminal(&cli::error_chain(&e))
            );
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    // Dependencies that log through `log` end up in tracing too.
    let _ = tracing_log::LogTracer::init();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
