//! The `kdbuild` binary: parse the command line, run it, map errors to exit codes.

use clap::Parser;

fn main() {
    let cli = kdbuild::cli::Cli::parse();
    if let Err(e) = kdbuild::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(e.kind().exit_code());
    }
}
