//! Command-line entry point of Signet: argument parsing and dispatch to the component crates.

use clap::{CommandFactory, Parser};

/// Signet: SPIFFE workload identity for Kubernetes and standalone hosts.
///
/// Signet gives every workload a short-lived, automatically rotated SPIFFE identity (X509-SVID
/// or JWT-SVID) over the standard SPIFFE Workload API. One binary runs the signing server, the
/// node agent, the CSI driver and the admin commands.
#[derive(Debug, Parser)]
#[command(name = "signet", version, about, long_about)]
pub struct Cli {}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli {} = cli;
    // No subcommand yet: show what the binary is and how to get help.
    Cli::command().print_help()?;
    println!();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_help_parse() {
        let version = Cli::try_parse_from(["signet", "--version"]).unwrap_err();
        assert_eq!(version.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(version.to_string().contains(env!("CARGO_PKG_VERSION")));
        let help = Cli::try_parse_from(["signet", "--help"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(help.to_string().contains("SPIFFE"));
        assert!(Cli::try_parse_from(["signet", "--no-such-flag"]).is_err());
        Cli::command().debug_assert();
    }
}
