//! `dfs`: the one command that gives a working DFS on a fresh machine (`dfs up ./mnt`).

mod up;

use clap::{Parser, Subcommand};

/// Command-line interface of `dfs`.
#[derive(Parser, Debug)]
#[command(name = "dfs", version, about = "Run a local DFS cluster and mount it")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start nameserver, lockserver and fileservers on embedded defaults and mount the cluster;
    /// stays in the foreground until Ctrl-C, then unmounts and stops everything.
    Up(up::UpArgs),
}

fn main() -> std::process::ExitCode {
    dfs_servers::common::init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dfs: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
