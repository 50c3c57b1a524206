//! `dfs keygen`: makes the cluster key the servers share and client keys signed with it.
//!
//! Keys go to stdout (for `> file` or a secret store) or, with `--output`, to a new file made
//! readable by its owner only; an existing file is never overwritten, so a cluster key cannot
//! be replaced by accident (every client key made from it would stop working).

use crate::common::CliError;
use dfs_proto::auth::{ClientKey, ClusterKey, Role};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `dfs keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Which key to make.
    #[command(subcommand)]
    pub kind: KeyKind,
}

/// The two kinds of key.
#[derive(clap::Subcommand, Debug)]
pub enum KeyKind {
    /// The secret every server of one cluster shares (`--cluster-key` of each server).
    Cluster {
        /// Write to this new file (mode 0600) instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// A key for a user, a mount or a program, signed with the cluster key (read-write
    /// unless `--read-only` or `--admin`).
    Client {
        /// The cluster key file to sign with.
        #[arg(long, value_name = "FILE")]
        cluster_key: PathBuf,
        /// Who holds the key (shown in lease lists and logs): 1-64 of A-Z a-z 0-9 . _ @ -.
        #[arg(long)]
        name: String,
        /// May only read and list.
        #[arg(long, conflicts_with = "admin")]
        read_only: bool,
        /// May also change replication and the directory map, break locks, chmod `/`.
        #[arg(long)]
        admin: bool,
        /// Write to this new file (mode 0600) instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Runs `dfs keygen`.
pub fn run(args: &KeygenArgs) -> Result<(), CliError> {
    match &args.kind {
        KeyKind::Cluster { output } => {
            let key = ClusterKey::generate();
            let text = format!(
                "# DFS cluster key: give it to every server (--cluster-key), keep it secret\n{}\n",
                key.to_text()
            );
            emit(output.as_deref(), &text)
        }
        KeyKind::Client {
            cluster_key,
            name,
            read_only,
            admin,
            output,
        } => {
            let cluster = ClusterKey::load(cluster_key)
                .map_err(|err| CliError::new(cluster_key.display(), err))?;
            let role = match (read_only, admin) {
                (true, _) => Role::ReadOnly,
                (_, true) => Role::Admin,
                _ => Role::ReadWrite,
            };
            let key = cluster
                .issue_client(name, role)
                .map_err(|err| CliError::usage(name, err))?;
            emit(output.as_deref(), &client_key_text(&key))?;
            eprintln!(
                "dfs: made {role} key {:?} with id {} (revoke it with revoked_keys: [\"{}\"])",
                key.name, key.id, key.id
            );
            Ok(())
        }
    }
}

/// A client key file's text: a comment naming the key, then the key line.
pub fn client_key_text(key: &ClientKey) -> String {
    format!(
        "# DFS client key {:?}, {}, id {}: use with --key FILE or DFS_KEY=FILE\n{}\n",
        key.name,
        key.role,
        key.id,
        key.to_text()
    )
}

fn emit(output: Option<&Path>, text: &str) -> Result<(), CliError> {
    match output {
        Some(path) => write_key_file(path, text).map_err(|err| CliError::io(path.display(), &err)),
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .map_err(|err| CliError::io("stdout", &err)),
    }
}

/// Writes a new key file readable by its owner only; fails when `path` exists.
pub fn write_key_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
