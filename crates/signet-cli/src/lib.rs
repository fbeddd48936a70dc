//! The `signet` command: argument parsing and dispatch to the server, agent and admin code.

mod cli;
mod commands;
mod output;
pub mod uds;

use clap::CommandFactory;
use tracing_subscriber::EnvFilter;

pub use cli::Cli;
use cli::{AgentCommand, Command, LogArgs, LogFormat};

fn init_logging(log: &LogArgs) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(&log.log_level).map_err(|e| anyhow::anyhow!("--log-level: {e}"))?;
    // Colours only on a terminal: `kubectl logs` and files get plain text (NO_COLOR honoured).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match log.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("logging: {e}"))
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli { log, command } = cli;
    let Some(command) = command else {
        Cli::command().print_help()?;
        println!();
        return Ok(());
    };
    init_logging(&log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Server(args) => commands::daemons::run_server(*args).await,
            Command::Agent(AgentCommand {
                action: Some(action),
                ..
            }) => commands::admin::agent(action).await,
            Command::Agent(AgentCommand { action: None, run }) => {
                commands::daemons::run_agent(*run).await
            }
            Command::Csi(args) => commands::daemons::run_csi(args).await,
            Command::Quickstart(args) => commands::quickstart::run(args).await,
            Command::Entry(c) => commands::admin::entry(c).await,
            Command::Token(c) => commands::admin::token(c).await,
            Command::Bundle(c) => commands::admin::bundle(c).await,
            Command::Svid(c) => commands::workload::svid(c).await,
            Command::Jwt(c) => commands::workload::jwt(c).await,
            Command::Policy(c) => commands::policy::policy(c).await,
            Command::Federation(c) => commands::federation::federation(c).await,
            Command::Ca(c) => commands::ca::ca(c).await,
            Command::Datastore(c) => commands::datastore::datastore(c).await,
            Command::Authz(c) => commands::policy::authz(c).await,
            Command::Proxy(args) => commands::proxy::run(args).await,
            Command::Healthcheck(args) => commands::workload::healthcheck(args).await,
            Command::Helper(args) => commands::helper::run(args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn version_and_help_parse() {
        let version = Cli::try_parse_from(["signet", "--version"]).unwrap_err();
        assert_eq!(version.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(version.to_string().contains(env!("CARGO_PKG_VERSION")));
        let help = Cli::try_parse_from(["signet", "--help"]).unwrap_err();
        assert!(help.to_string().contains("quickstart"));
        assert!(Cli::try_parse_from(["signet", "--no-such-flag"]).is_err());
    }

    #[test]
    fn agent_runs_or_manages() {
        let run =
            Cli::try_parse_from(["signet", "agent", "--trust-domain", "example.org"]).unwrap();
        assert!(matches!(
            run.command,
            Some(Command::Agent(AgentCommand { action: None, .. }))
        ));
        let list = Cli::try_parse_from(["signet", "agent", "list"]).unwrap();
        assert!(matches!(
            list.command,
            Some(Command::Agent(AgentCommand {
                action: Some(_),
                ..
            }))
        ));
    }
}
