//! `dfs locks`, `dfs fileservers`, `dfs map` and `dfs status`: what an operator asks the
//! cluster, read from the nameserver's `GET /v1/cluster`, the lockserver's `GET /v1/locks`
//! (the lockserver found through the nameserver) and each fileserver's `GET /v1/blobs`.
//! The changes are `dfs map set` (`POST /v1/dirs/replication`) and `dfs locks break`
//! (`POST /v1/locks/break`), both for admin keys.

use crate::common::Access;
use crate::common::CliError;
use crate::namespace::print_json;
use clap::{Args, Subcommand};
use dfs_proto::client::{FileClient, LockClient, NameClient};
use dfs_proto::locks::BreakRequest;
use dfs_proto::names::ClusterInfo;
use dfs_proto::{ApiError, DfsPath};
use serde::Serialize;
use std::future::Future;
use std::io;

/// `dfs locks`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  dfs locks
  dfs locks --json | jq '.leases[].paths'
  dfs locks break /reports/q3.xlsx          # admin key: free a stuck writer's lease")]
pub struct LocksArgs {
    /// The lockserver's `LeaseList` as JSON.
    #[arg(long)]
    pub json: bool,
    /// `break`: end a lease whoever holds it.
    #[command(subcommand)]
    pub command: Option<LocksCommand>,
}

/// Subcommands of `dfs locks`.
#[derive(Subcommand, Debug)]
pub enum LocksCommand {
    /// End a lease at once, whoever holds it (admin key). Its paths are free for the next
    /// writer, whose higher fencing token makes anything the old holder still sends fail;
    /// the old holder's open file gets an error at its next renew or close.
    #[command(after_help = "Examples:
  dfs locks break /reports/q3.xlsx
  dfs locks break 42                        # by fencing token, as `dfs locks` shows it")]
    Break {
        /// A path the lease covers, or its fencing token.
        #[arg(value_name = "PATH|TOKEN")]
        lease: String,
    },
}

/// `dfs fileservers`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  dfs fileservers
  dfs fileservers --json")]
pub struct FileserversArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `dfs map`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  dfs map                                   # directory -> fileservers, replication
  dfs map set /photos --replication 3       # /photos and below want 3 copies
  dfs map set /photos --replication default # back to the cluster default")]
pub struct MapArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// `set`: change a directory's replication factor.
    #[command(subcommand)]
    pub command: Option<MapCommand>,
}

/// Subcommands of `dfs map`.
#[derive(Subcommand, Debug)]
pub enum MapCommand {
    /// Set (or with `default`, remove) the replication factor of a directory prefix; it
    /// takes effect at once (new writes, repair, the under-replicated list).
    #[command(after_help = "Examples:
  dfs map set /photos --replication 3
  dfs map set /photos --replication default")]
    Set {
        /// The directory prefix (need not exist).
        #[arg(value_name = "DIR")]
        dir: String,
        /// Copies wanted, 1 to 64, or `default` for the cluster's factor.
        #[arg(long, value_name = "N")]
        replication: String,
    },
}

/// `dfs status`.
#[derive(Args, Debug)]
#[command(after_help = "Example:
  dfs status")]
pub struct StatusArgs {
    /// JSON instead of one screen of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `future` on a small runtime of its own (admin calls are a few requests).
fn block_on<T>(future: impl Future<Output = T>) -> Result<T, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::io("runtime", &err))?;
    Ok(runtime.block_on(future))
}

/// An error from `server` as one line.
fn api(server: &str, err: ApiError) -> CliError {
    CliError::io(server, &io::Error::from(err))
}

/// The cluster as the nameserver sees it.
async fn cluster(names: &NameClient) -> Result<ClusterInfo, CliError> {
    names.cluster().await.map_err(|err| api(names.url(), err))
}

/// The lockserver's client, found through the nameserver.
fn lock_client(info: &ClusterInfo, access: &Access) -> Result<LockClient, CliError> {
    match &info.lockserver {
        Some(url) => Ok(access.locks(url)),
        None => Err(CliError::new(
            &access.nameserver,
            "the nameserver knows no lockserver",
        )),
    }
}

/// Runs `dfs locks break`.
fn break_lease(access: &Access, lease: &str) -> Result<(), CliError> {
    let req = match lease.parse::<u64>() {
        Ok(token) => BreakRequest {
            token: Some(token),
            path: None,
        },
        Err(_) => BreakRequest {
            token: None,
            path: Some(DfsPath::parse(lease).map_err(|err| CliError::usage(lease, err))?),
        },
    };
    block_on(async {
        let names = access.names();
        let info = cluster(&names).await?;
        let locks = lock_client(&info, access)?;
        let broken = locks
            .break_lease(&req)
            .await
            .map_err(|err| api(lease, err))?;
        let paths: Vec<String> = broken.paths.iter().map(ToString::to_string).collect();
        print_text(&format!(
            "broke lease {} of {} on {}\n",
            broken.token,
            broken.client,
            paths.join(" ")
        ))
    })?
}

/// Runs `dfs locks`.
pub fn locks(access: &Access, args: &LocksArgs) -> Result<(), CliError> {
    if let Some(LocksCommand::Break { lease }) = &args.command {
        return break_lease(access, lease);
    }
    block_on(async {
        let names = access.names();
        let info = cluster(&names).await?;
        let locks = lock_client(&info, access)?;
        let list = locks.list().await.map_err(|err| api(locks.url(), err))?;
        let mut out = io::stdout().lock();
        if args.json {
            return print_json(&mut out, &list);
        }
        let mut text = format!(
            "{:>8}  {:>9}  {:<30}  PATHS\n",
            "TOKEN", "TIME LEFT", "HOLDER"
        );
        for lease in &list.leases {
            let paths: Vec<String> = lease.paths.iter().map(ToString::to_string).collect();
            text.push_str(&format!(
                "{:>8}  {:>8.1}s  {:<30}  {}\n",
                lease.token,
                lease.expires_in_ms as f64 / 1000.0,
                lease.client,
                paths.join(" ")
            ));
        }
        if list.leases.is_empty() {
            text.push_str("(no leases held)\n");
        }
        print_text(&text)
    })?
}

/// One fileserver's line for `dfs fileservers`.
#[derive(Serialize)]
struct FileserverLine {
    id: String,
    url: String,
    alive: bool,
    capacity_bytes: u64,
    free_bytes: u64,
    /// Blobs stored, or `None` when the server did not answer.
    blobs: Option<usize>,
    last_seen_ms_ago: u64,
}

/// The fileservers with their blob counts (asked of every alive server in parallel).
async fn fileserver_lines(info: &ClusterInfo, files: FileClient) -> Vec<FileserverLine> {
    let counts = futures_join(info.fileservers.iter().map(|fs| {
        let files = files.clone();
        let (url, alive) = (fs.url.clone(), fs.alive);
        async move {
            if !alive {
                return None;
            }
            let listed =
                tokio::time::timeout(std::time::Duration::from_secs(5), files.list(&url)).await;
            match listed {
                Ok(Ok(list)) => Some(list.blobs.len()),
                _ => None,
            }
        }
    }))
    .await;
    info.fileservers
        .iter()
        .zip(counts)
        .map(|(fs, blobs)| FileserverLine {
            id: fs.id.to_string(),
            url: fs.url.clone(),
            alive: fs.alive,
            capacity_bytes: fs.capacity_bytes,
            free_bytes: fs.free_bytes,
            blobs,
            last_seen_ms_ago: fs.last_seen_ms_ago,
        })
        .collect()
}

/// Runs all `futures` concurrently, results in order.
async fn futures_join<T: Send + 'static>(
    futures: impl Iterator<Item = impl Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(value) => out.push(value),
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
    out
}

/// `12.3G`-style sizes.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// The table of `dfs fileservers`.
fn fileserver_table(lines: &[FileserverLine]) -> String {
    let mut text = format!(
        "{:<20} {:<26} {:<5} {:>9} {:>9} {:>7}\n",
        "ID", "URL", "ALIVE", "CAPACITY", "FREE", "BLOBS"
    );
    for l in lines {
        text.push_str(&format!(
            "{:<20} {:<26} {:<5} {:>9} {:>9} {:>7}\n",
            l.id,
            l.url,
            if l.alive { "yes" } else { "no" },
            human(l.capacity_bytes),
            human(l.free_bytes),
            l.blobs.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        ));
    }
    text
}

/// Runs `dfs fileservers`.
pub fn fileservers(access: &Access, args: &FileserversArgs) -> Result<(), CliError> {
    block_on(async {
        let info = cluster(&access.names()).await?;
        let lines = fileserver_lines(&info, access.files()).await;
        if args.json {
            return print_json(&mut io::stdout().lock(), &lines);
        }
        print_text(&fileserver_table(&lines))
    })?
}

/// The table of `dfs map`.
fn map_table(info: &ClusterInfo) -> String {
    let mut text = format!(
        "{:<30} {:>11}  FILESERVERS\n(cluster default replication: {})\n",
        "DIRECTORY", "REPLICATION", info.replication
    );
    for line in &info.map {
        let servers: Vec<String> = line.servers.iter().map(ToString::to_string).collect();
        let replication = line
            .replication
            .map_or_else(|| format!("({})", info.replication), |n| n.to_string());
        let servers = if servers.is_empty() {
            "(any)".to_owned()
        } else {
            servers.join(" ")
        };
        text.push_str(&format!(
            "{:<30} {:>11}  {servers}\n",
            line.dir.to_string(),
            replication
        ));
    }
    text
}

/// Runs `dfs map` and `dfs map set`.
pub fn map(access: &Access, args: &MapArgs) -> Result<(), CliError> {
    block_on(async {
        let names = access.names();
        if let Some(MapCommand::Set { dir, replication }) = &args.command {
            let factor = match replication.as_str() {
                "default" | "none" => None,
                n => Some(n.parse::<u32>().map_err(|_| {
                    CliError::usage(n, "--replication takes a number from 1 to 64, or default")
                })?),
            };
            let path = DfsPath::parse(dir).map_err(|err| api(dir, err))?;
            let line = names
                .set_dir_replication(&path, factor)
                .await
                .map_err(|err| api(dir, err))?;
            if args.json {
                return print_json(&mut io::stdout().lock(), &line);
            }
            return Ok(());
        }
        let info = cluster(&names).await?;
        if args.json {
            return print_json(&mut io::stdout().lock(), &info.map);
        }
        print_text(&map_table(&info))
    })?
}

/// What `dfs status` reports.
#[derive(Serialize)]
struct Status {
    nameserver: String,
    lockserver: Option<String>,
    lockserver_up: bool,
    fileservers_alive: usize,
    fileservers: usize,
    replication: u32,
    under_replicated: Vec<dfs_proto::names::UnderReplicated>,
    /// Leases held now, or `None` when the lockserver did not answer.
    leases_held: Option<usize>,
}

/// Runs `dfs status`.
pub fn status(access: &Access, args: &StatusArgs) -> Result<(), CliError> {
    block_on(async {
        let names = access.names();
        let info = cluster(&names).await?;
        let leases = match &info.lockserver {
            Some(url) => access.locks(url).list().await.ok(),
            None => None,
        };
        let status = Status {
            nameserver: access.nameserver.clone(),
            lockserver: info.lockserver.clone(),
            lockserver_up: leases.is_some(),
            fileservers_alive: info.fileservers.iter().filter(|f| f.alive).count(),
            fileservers: info.fileservers.len(),
            replication: info.replication,
            under_replicated: info.under_replicated.clone(),
            leases_held: leases.as_ref().map(|l| l.leases.len()),
        };
        if args.json {
            return print_json(&mut io::stdout().lock(), &status);
        }
        let mut text = format!("nameserver   {}  up\n", access.nameserver);
        text.push_str(&format!(
            "lockserver   {}  {}\n",
            status.lockserver.as_deref().unwrap_or("(none)"),
            if status.lockserver_up { "up" } else { "DOWN" }
        ));
        text.push_str(&format!(
            "fileservers  {}/{} alive (replication {})\n",
            status.fileservers_alive, status.fileservers, status.replication
        ));
        for fs in info.fileservers.iter().filter(|f| !f.alive) {
            text.push_str(&format!(
                "  down: {} {} (last seen {} s ago)\n",
                fs.id,
                fs.url,
                fs.last_seen_ms_ago / 1000
            ));
        }
        // The nameserver names at most 1000; its count has them all (an older one: none).
        let under = (info.under_replicated_count as usize).max(status.under_replicated.len());
        text.push_str(&format!("under-replicated files  {under}\n"));
        for u in status.under_replicated.iter().take(10) {
            text.push_str(&format!("  {} {}/{}\n", u.path, u.live_copies, u.wanted));
        }
        if under > 10 {
            text.push_str("  ...\n");
        }
        text.push_str(&format!(
            "leases held  {}\n",
            status
                .leases_held
                .map_or_else(|| "?".to_owned(), |n| n.to_string())
        ));
        print_text(&text)
    })?
}

/// Prints `text` to stdout (a closed pipe is fine).
fn print_text(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    match io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(err) => Err(CliError::io("stdout", &err)),
    }
}
