//! The `signet` binary.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = signet_cli::Cli::parse();
    signet_cli::run(cli)
}
