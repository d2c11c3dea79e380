//! `ddpm`: train, sample and inspect the DDPM of this crate from the command line.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        // One line: the error and its context chain.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
