//! `signet datastore migrate`: from one server's SQLite to a PostgreSQL several servers share.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::cli::ServerDatastoreArgs;

/// `signet datastore …`
#[derive(Debug, Subcommand)]
pub enum DatastoreCommand {
    /// Copy a standalone server's SQLite database and CA key file into PostgreSQL, so that
    /// several servers can share it. Idempotent: run it again after an interruption. Stop the
    /// server first: changes it makes during the copy are not copied.
    Migrate(MigrateArgs),
}

/// `signet datastore migrate`
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The SQLite database (the server's <data-dir>/signet.db).
    #[arg(long)]
    pub from: PathBuf,
    /// The CA key file [default: ca-keys.json beside --from].
    #[arg(long)]
    pub ca_keys: Option<PathBuf>,
    /// The PostgreSQL database, e.g. postgres://signet@db.example:5432/signet.
    #[arg(long)]
    pub to: String,
    /// File holding the database password. Or set SIGNET_DATASTORE_PASSWORD.
    #[arg(long, env = "SIGNET_DATASTORE_PASSWORD_FILE")]
    pub datastore_password_file: Option<PathBuf>,
    /// PEM roots that sign the database's TLS certificate, besides the system's.
    #[arg(long, env = "SIGNET_DATASTORE_CA_FILE")]
    pub datastore_ca_file: Option<PathBuf>,
    /// Key that seals the CA state in the database (the servers get the same file).
    #[arg(long, env = "SIGNET_DATASTORE_CA_KEY_FILE")]
    pub datastore_ca_key_file: Option<PathBuf>,
    /// Store the CA keys in the database in plain text (the key file holds PKCS#11 key ids
    /// only, or you accept that anyone who reads the database can sign SVIDs).
    #[arg(long)]
    pub datastore_plaintext_ca_keys: bool,
}

/// Draws `table: done/total` as a bar on a terminal, and every 10 % otherwise.
fn progress(table: &str, done: usize, total: usize) {
    let mut err = std::io::stderr();
    if err.is_terminal() {
        let width = 30;
        let filled = (done * width).checked_div(total).unwrap_or(width);
        let _ = write!(
            err,
            "\r{table:<26} [{}{}] {done}/{total}",
            "#".repeat(filled),
            " ".repeat(width - filled.min(width))
        );
        if done == total {
            let _ = writeln!(err);
        }
    } else if done == total || (total >= 10 && done.is_multiple_of(total / 10)) {
        let _ = writeln!(err, "{table}: {done}/{total}");
    }
}

/// Runs a `signet datastore` command.
pub async fn datastore(command: DatastoreCommand) -> anyhow::Result<()> {
    let DatastoreCommand::Migrate(args) = command;
    let flags = ServerDatastoreArgs {
        datastore: Some(args.to),
        datastore_password_file: args.datastore_password_file,
        datastore_ca_file: args.datastore_ca_file,
        datastore_ca_key_file: args.datastore_ca_key_file,
        datastore_plaintext_ca_keys: args.datastore_plaintext_ca_keys,
    };
    let (target, protection) =
        super::daemons::datastore_config(flags, ServerDatastoreArgs::default(), false)?;
    let target = target.context("--to is required")?;
    let protection = protection.context(
        "the CA keys go into the database: give --datastore-ca-key-file (the servers get the same \
         file) or --datastore-plaintext-ca-keys",
    )?;
    let ca_keys = args.ca_keys.unwrap_or_else(|| {
        args.from.parent().map_or_else(
            || PathBuf::from("ca-keys.json"),
            |dir| dir.join("ca-keys.json"),
        )
    });
    let report = signet_server::migrate::sqlite_to_postgres(
        &args.from, &ca_keys, target, protection, &progress,
    )
    .await?;
    println!("{:<26} {:>8} {:>10}", "TABLE", "SQLITE", "POSTGRES");
    for (table, source, target) in &report.tables {
        println!("{table:<26} {source:>8} {target:>10}");
    }
    println!("{}", report.ca_state);
    anyhow::ensure!(
        report.verified(),
        "PostgreSQL holds fewer rows than the SQLite database for some table (see above)"
    );
    println!("verified: every row is in PostgreSQL");
    Ok(())
}
