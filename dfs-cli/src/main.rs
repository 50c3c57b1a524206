//! `dfs`: the one command that gives a working DFS on a fresh machine (`dfs up ./mnt`), and
//! `dfs mount URL DIR`, the same mount as `dfs-fuse` (both run the `dfs-fuse` library
//! in-process, so `dfs` needs no other binary beside it); the data subcommands (`put`,
//! `get`, `cat`, `ls`, `stat`, `mkdir`, `rm`, `mv`) over `dfs_client`, the admin ones
//! (`locks`, `fileservers`, `map`, `status`), `keygen` and shell `completions`.
//!
//! Started as `mount.fuse.dfs` (a symlink mount(8) runs for `mount -t fuse.dfs`), it acts as
//! that helper. Errors are one line `dfs: ...`; exit code 1 on failure, 2 on a usage error.

mod admin;
mod common;
mod interrupt;
mod keygen;
mod namespace;
mod transfer;
mod up;
mod xattr;

use clap::{Parser, Subcommand};
use dfs_fuse::{daemon, options};
use std::ffi::OsString;
use std::process::ExitCode;

/// Command-line interface of `dfs`.
#[derive(Parser, Debug)]
#[command(
    name = "dfs",
    version,
    about = "Run a local DFS cluster and mount it, mount a running cluster, copy files in and \
             out, look at the cluster"
)]
struct Cli {
    /// Where the cluster is (for every subcommand but `up` and `mount`).
    #[command(flatten)]
    cluster: common::ClusterArgs,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Start nameserver, lockserver and three fileservers on embedded defaults and mount the
    /// cluster; stays in the foreground until Ctrl-C, then unmounts and stops everything.
    Up(up::UpArgs),
    /// Mount a running cluster: the same command as `dfs-fuse URL DIR`, with the same
    /// options (see docs/mount.md). Daemonises unless -f; returns once the mount is usable.
    Mount(options::Args),
    /// Copy local files (or trees, with -r) into the cluster; each file is published whole.
    Put(transfer::PutArgs),
    /// Copy files (or trees, with -r) out of the cluster; each lands whole (temp + rename).
    Get(transfer::GetArgs),
    /// Write remote files to stdout.
    Cat(transfer::CatArgs),
    /// List directories.
    Ls(namespace::LsArgs),
    /// Show an entry's metadata (size, mode, version, checksum, servers).
    Stat(namespace::StatArgs),
    /// Create directories.
    Mkdir(namespace::MkdirArgs),
    /// Remove files (and trees, with -r).
    Rm(namespace::RmArgs),
    /// Rename or move a file or a tree, atomically.
    Mv(namespace::MvArgs),
    /// List, read, set or remove extended attributes.
    Xattr(xattr::XattrArgs),
    /// Make a symbolic link: `dfs ln -s TARGET LINK`.
    Ln(namespace::LnArgs),
    /// Change permission bits (octal MODE).
    Chmod(namespace::ChmodArgs),
    /// Change owner and/or group (numeric UID[:GID]).
    Chown(namespace::ChownArgs),
    /// Write leases held now: holder, fencing token, time left; `locks break` ends one (admin).
    Locks(admin::LocksArgs),
    /// The fileservers: id, URL, alive, capacity, free space, blobs.
    Fileservers(admin::FileserversArgs),
    /// Directory -> fileservers and replication; `map set DIR --replication N`.
    Map(admin::MapArgs),
    /// One screen: servers up, fileservers alive, under-replicated files, leases held.
    Status(admin::StatusArgs),
    /// Make keys: `keygen cluster` (the servers' shared secret) and `keygen client
    /// --cluster-key FILE --name NAME [--read-only | --admin]` (see docs/security.md).
    Keygen(keygen::KeygenArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Examples:
  dfs completions bash > /etc/bash_completion.d/dfs
  dfs completions zsh > \"${fpath[1]}/_dfs\"
  dfs completions fish > ~/.config/fish/completions/dfs.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    if argv
        .first()
        .is_some_and(|name| options::invoked_as_mount_helper(name))
    {
        let rest = argv.get(1..).unwrap_or_default();
        return daemon::run_mount_helper(rest, "dfs", &["mount"]);
    }
    // mount.fuse3 (type `fuse.dfs` without a mount.fuse.dfs helper installed) runs
    // `dfs SOURCE DIR -o OPTS`: a URL where a subcommand belongs means `dfs mount`.
    if argv.get(1).is_some_and(|a| is_url(&a.to_string_lossy())) {
        argv.insert(1, "mount".into());
    }
    let cli = match daemon::parse_args::<Cli>("dfs", &argv) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Command::Up(args) => {
            // The servers' progress too: `dfs up` is a cluster as much as a mount.
            daemon::init_logging("info");
            match up::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("dfs: {err:#}");
                    if err.is::<up::UsageError>() {
                        ExitCode::from(2)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
        Command::Mount(args) => {
            let rest = argv.get(1..).unwrap_or_default().to_vec();
            daemon::run_mount(args, "dfs", rest)
        }
        Command::Keygen(args) => match keygen::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("{err}");
                err.exit_code()
            }
        },
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "dfs", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        command => match run_cluster_command(&cli.cluster, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("{err}");
                err.exit_code()
            }
        },
    }
}

/// Runs a data or admin subcommand against the cluster at `cluster`.
fn run_cluster_command(
    cluster: &common::ClusterArgs,
    command: Command,
) -> Result<(), common::CliError> {
    // Before any thread exists: an interrupted transfer must end without unwinding.
    interrupt::install();
    cluster.install_tls()?;
    let access = cluster.access()?;
    match command {
        Command::Locks(args) => return admin::locks(&access, &args),
        Command::Fileservers(args) => return admin::fileservers(&access, &args),
        Command::Map(args) => return admin::map(&access, &args),
        Command::Status(args) => return admin::status(&access, &args),
        _ => {}
    }
    let spool = tempfile::Builder::new()
        .prefix("dfs-spool-")
        .tempdir()
        .map_err(|err| common::CliError::io("temporary directory", &err))?;
    let spool_path = spool.path().to_owned();
    let _cleanup = interrupt::on_interrupt(move || {
        let _ = std::fs::remove_dir_all(&spool_path);
    });
    let client = cluster.client(spool.path())?;
    match command {
        Command::Put(args) => transfer::put(&client, &args),
        Command::Get(args) => {
            let downloader = transfer::Downloader::new(&access)?;
            transfer::get(&client, &downloader, &args)
        }
        Command::Cat(args) => transfer::cat(&client, &args),
        Command::Ls(args) => namespace::ls(&client, &args),
        Command::Stat(args) => namespace::stat(&client, &args),
        Command::Mkdir(args) => namespace::mkdir(&client, &args),
        Command::Rm(args) => namespace::rm(&client, &args),
        Command::Mv(args) => namespace::mv(&client, &args),
        Command::Xattr(args) => xattr::xattr(&client, &args),
        Command::Ln(args) => namespace::ln(&client, &args),
        Command::Chmod(args) => namespace::chmod(&client, &args),
        Command::Chown(args) => namespace::chown(&client, &args),
        _ => Ok(()),
    }
}

/// Whether `arg` is a nameserver URL rather than a subcommand.
fn is_url(arg: &str) -> bool {
    arg.starts_with("http://") || arg.starts_with("https://")
}
