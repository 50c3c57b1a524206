//! `dfs ls`, `dfs stat`, `dfs mkdir`, `dfs rm`, `dfs mv`, `dfs ln [-s]`, `dfs chmod` and
//! `dfs chown`: the namespace at the nameserver, each change committed there before the
//! command returns.

use crate::common::{base_name, is_not_found, join, CliError};
use clap::Args;
use dfs_client::blocking::Client;
use dfs_client::Metadata;
use dfs_proto::names::{Entry, EntryKind};
use std::io::{self, Write};

/// `dfs ls`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  dfs ls /docs
  dfs ls -lR /backup
  dfs ls --json /docs | jq '.[].size'")]
pub struct LsArgs {
    /// Long listing: kind and mode, links, owner and group (numeric), size, version,
    /// modification time, name (and `-> target` for a symbolic link).
    #[arg(short, long)]
    pub long: bool,
    /// List subdirectories too, recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// One JSON array of entries (the nameserver's `Entry` objects) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Remote paths (default `/`).
    #[arg(value_name = "REMOTE")]
    pub paths: Vec<String>,
}

/// `dfs stat`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  dfs stat /docs/report.pdf
  dfs stat --json /docs/report.pdf | jq .version")]
pub struct StatArgs {
    /// Print the entries as JSON (one object for one path, else an array).
    #[arg(long)]
    pub json: bool,
    /// Remote paths.
    #[arg(required = true, value_name = "REMOTE")]
    pub paths: Vec<String>,
}

/// `dfs mkdir`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  dfs mkdir /docs
  dfs mkdir -p /backup/2026/12")]
pub struct MkdirArgs {
    /// Create missing parents; an existing directory is fine.
    #[arg(short, long)]
    pub parents: bool,
    /// Remote directories to create.
    #[arg(required = true, value_name = "REMOTE")]
    pub paths: Vec<String>,
}

/// `dfs rm`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  dfs rm /docs/old.txt
  dfs rm -r /backup/2025")]
pub struct RmArgs {
    /// Remove directories and everything under them.
    #[arg(short, long)]
    pub recursive: bool,
    /// Remote paths to remove.
    #[arg(required = true, value_name = "REMOTE")]
    pub paths: Vec<String>,
}

/// `dfs mv`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  dfs mv /docs/draft.txt /docs/final.txt
  dfs mv /docs/final.txt /archive/           # into a directory
  dfs mv /photos /backup/photos              # a whole tree, atomically
  dfs mv --exchange /site/live /site/next    # swap two names atomically")]
pub struct MvArgs {
    /// The remote path to move.
    #[arg(value_name = "FROM")]
    pub from: String,
    /// The new path, or an existing directory to move into.
    #[arg(value_name = "TO")]
    pub to: String,
    /// Swap FROM and TO atomically instead (both must exist; RENAME_EXCHANGE).
    #[arg(long)]
    pub exchange: bool,
}

/// `dfs ln`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  dfs ln /docs/report.pdf /archive/report-2026.pdf   # a hard link: one file, two names
  dfs ln -s ../shared/report.pdf /docs/report.pdf
  dfs ln -s /data/current /latest")]
pub struct LnArgs {
    /// Make a symbolic link instead of a hard link.
    #[arg(short, long)]
    pub symbolic: bool,
    /// A hard link's existing file; a symbolic link's target, stored as given (relative
    /// targets resolve from the link's directory when followed on a mount).
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// The link to create.
    #[arg(value_name = "LINK")]
    pub link: String,
}

/// `dfs chmod`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  dfs chmod 640 /docs/report.pdf
  dfs chmod 1777 /shared")]
pub struct ChmodArgs {
    /// Octal mode (up to 4 digits: setuid/setgid/sticky and rwx for owner, group, others).
    #[arg(value_name = "MODE", value_parser = parse_mode)]
    pub mode: u32,
    /// Remote paths.
    #[arg(required = true, value_name = "REMOTE")]
    pub paths: Vec<String>,
}

/// `dfs chown`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  dfs chown 1000 /home/alice
  dfs chown 1000:100 /home/alice/notes.txt
  dfs chown :100 /shared          # the group only")]
pub struct ChownArgs {
    /// `UID`, `UID:GID` or `:GID` (numeric: the cluster has no user database).
    #[arg(value_name = "UID[:GID]", value_parser = parse_owner)]
    pub owner: (Option<u32>, Option<u32>),
    /// Remote paths.
    #[arg(required = true, value_name = "REMOTE")]
    pub paths: Vec<String>,
}

/// An octal mode such as `644` or `1777`.
fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o7777 && !text.is_empty() && text.len() <= 4 => Ok(mode),
        _ => Err(format!("{text:?} is not an octal mode (0 to 7777)")),
    }
}

/// `UID`, `UID:GID` or `:GID`.
fn parse_owner(text: &str) -> Result<(Option<u32>, Option<u32>), String> {
    let id = |part: &str| -> Result<Option<u32>, String> {
        if part.is_empty() {
            Ok(None)
        } else {
            part.parse()
                .map(Some)
                .map_err(|_| format!("{part:?} is not a numeric id"))
        }
    };
    let (uid, gid) = match text.split_once(':') {
        Some((u, g)) => (id(u)?, id(g)?),
        None => (id(text)?, None),
    };
    if uid.is_none() && gid.is_none() {
        return Err("give UID, UID:GID or :GID".into());
    }
    Ok((uid, gid))
}

/// Runs `dfs ln` (`-s`: symbolic).
pub fn ln(client: &Client, args: &LnArgs) -> Result<(), CliError> {
    let made = if args.symbolic {
        client.symlink(&args.target, &args.link)
    } else {
        client.hard_link(&args.target, &args.link)
    };
    made.map_err(|err| CliError::io(&args.link, &err))
}

/// Runs `dfs chmod`.
pub fn chmod(client: &Client, args: &ChmodArgs) -> Result<(), CliError> {
    for path in &args.paths {
        client
            .set_mode(path, args.mode)
            .map_err(|err| CliError::io(path, &err))?;
    }
    Ok(())
}

/// Runs `dfs chown`.
pub fn chown(client: &Client, args: &ChownArgs) -> Result<(), CliError> {
    let (uid, gid) = args.owner;
    for path in &args.paths {
        client
            .set_owner(path, uid, gid)
            .map_err(|err| CliError::io(path, &err))?;
    }
    Ok(())
}

/// The `ls -l` type letter of a kind.
fn kind_char(kind: EntryKind) -> char {
    match kind {
        EntryKind::File => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Fifo => 'p',
        EntryKind::Socket => 's',
        EntryKind::CharDevice => 'c',
        EntryKind::BlockDevice => 'b',
    }
}

/// The word `stat` shows for a kind.
fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "directory",
        EntryKind::Symlink => "symbolic link",
        EntryKind::Fifo => "fifo",
        EntryKind::Socket => "socket",
        EntryKind::CharDevice => "character device",
        EntryKind::BlockDevice => "block device",
    }
}

/// Runs `dfs ls`.
pub fn ls(client: &Client, args: &LsArgs) -> Result<(), CliError> {
    let paths = if args.paths.is_empty() {
        vec!["/".to_owned()]
    } else {
        args.paths.clone()
    };
    let mut out = io::stdout().lock();
    let mut json = Vec::new();
    let several = paths.len() > 1 || args.recursive;
    for (i, path) in paths.iter().enumerate() {
        let meta = client
            .metadata(path)
            .map_err(|err| CliError::io(path, &err))?;
        if !meta.is_dir() {
            if args.json {
                json.push(meta.entry().clone());
            } else {
                print_line(&mut out, &meta, path, args.long)?;
            }
            continue;
        }
        let mut dirs = vec![path.clone()];
        let mut first = i == 0;
        while let Some(dir) = dirs.pop() {
            let entries = client
                .read_dir(&dir)
                .map_err(|err| CliError::io(&dir, &err))?;
            if args.json {
                json.extend(entries.iter().map(|e| e.metadata().entry().clone()));
            } else {
                if several {
                    let sep = if first { "" } else { "\n" };
                    write_out(&mut out, format_args!("{sep}{dir}:\n"))?;
                }
                for entry in &entries {
                    print_line(&mut out, entry.metadata(), entry.file_name(), args.long)?;
                }
            }
            first = false;
            if args.recursive {
                // Depth first, in name order: push in reverse.
                for entry in entries.iter().rev() {
                    if entry.metadata().is_dir() {
                        dirs.push(entry.path().to_string());
                    }
                }
            }
        }
    }
    if args.json {
        print_json(&mut out, &json)?;
    }
    Ok(())
}

/// One line of `ls`: the name, or with `-l` kind+mode, links, owner, group, size, version,
/// mtime, name and a link's target.
fn print_line(
    out: &mut impl Write,
    meta: &Metadata,
    name: &str,
    long: bool,
) -> Result<(), CliError> {
    if !long {
        return write_out(out, format_args!("{name}\n"));
    }
    let kind = kind_char(meta.kind());
    let entry = meta.entry();
    let arrow = meta
        .symlink_target()
        .map(|t| format!(" -> {t}"))
        .unwrap_or_default();
    write_out(
        out,
        format_args!(
            "{kind}{} {:>3} {:>5} {:>5} {:>12} v{:<8} {} {name}{arrow}\n",
            mode_string(meta.mode()),
            meta.nlink(),
            meta.uid(),
            meta.gid(),
            meta.len(),
            entry.version,
            time_string(entry.mtime_ns),
        ),
    )
}

/// `rwxr-xr-x` for the permission bits of `mode`.
fn mode_string(mode: u32) -> String {
    let mut text = String::with_capacity(9);
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 7;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    text
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for nanoseconds since the epoch.
fn time_string(mtime_ns: i64) -> String {
    let secs = mtime_ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Writes to stdout; a closed pipe (`dfs ls | head`) is not an error worth a line.
fn write_out(out: &mut impl Write, args: std::fmt::Arguments<'_>) -> Result<(), CliError> {
    match out.write_fmt(args) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(err) => Err(CliError::io("stdout", &err)),
    }
}

/// Prints `value` as pretty JSON and a newline.
pub fn print_json(out: &mut impl Write, value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|err| CliError::new("json", err))?;
    write_out(out, format_args!("{text}\n"))
}

/// Runs `dfs stat`.
pub fn stat(client: &Client, args: &StatArgs) -> Result<(), CliError> {
    let mut entries: Vec<Entry> = Vec::new();
    for path in &args.paths {
        let meta = client
            .metadata(path)
            .map_err(|err| CliError::io(path, &err))?;
        entries.push(meta.entry().clone());
    }
    let mut out = io::stdout().lock();
    if args.json {
        return match entries.as_slice() {
            [one] => print_json(&mut out, one),
            all => print_json(&mut out, &all),
        };
    }
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            write_out(&mut out, format_args!("\n"))?;
        }
        let kind = kind_name(e.kind);
        let target = e
            .target
            .as_deref()
            .map(|t| format!("  target: {t}\n"))
            .unwrap_or_default();
        let changed = e
            .ctime_ns
            .map(|ns| format!("  changed: {} UTC\n", time_string(ns)))
            .unwrap_or_default();
        write_out(
            &mut out,
            format_args!(
                "  path: {}\n  kind: {kind}\n{target}  size: {}\n  mode: {:04o}\n  \
                 owner: uid {} gid {}\n  links: {}\n  modified: {} UTC\n{changed}  \
                 version: {}\n  checksum: {}\n  id: {}\n  servers: {}\n",
                e.path,
                e.size,
                e.mode,
                e.uid,
                e.gid,
                e.nlink,
                time_string(e.mtime_ns),
                e.version,
                e.checksum,
                e.id,
                e.servers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        )?;
    }
    Ok(())
}

/// Runs `dfs mkdir`.
pub fn mkdir(client: &Client, args: &MkdirArgs) -> Result<(), CliError> {
    for path in &args.paths {
        let made = if args.parents {
            client.create_dir_all(path)
        } else {
            client.create_dir(path)
        };
        made.map_err(|err| CliError::io(path, &err))?;
    }
    Ok(())
}

/// Runs `dfs rm`.
pub fn rm(client: &Client, args: &RmArgs) -> Result<(), CliError> {
    for path in &args.paths {
        if path.trim_end_matches('/').is_empty() {
            return Err(CliError::usage(
                path,
                "refusing to remove the root directory",
            ));
        }
        let meta = client
            .metadata(path)
            .map_err(|err| CliError::io(path, &err))?;
        if meta.is_dir() {
            if !args.recursive {
                return Err(CliError::new(
                    path,
                    "is a directory (use -r to remove a tree)",
                ));
            }
            remove_tree(client, path)?;
        } else {
            client
                .remove_file(path)
                .map_err(|err| CliError::io(path, &err))?;
        }
    }
    Ok(())
}

/// Removes directory `dir` and everything under it, depth first.
fn remove_tree(client: &Client, dir: &str) -> Result<(), CliError> {
    let entries = client
        .read_dir(dir)
        .map_err(|err| CliError::io(dir, &err))?;
    for entry in entries {
        let path = entry.path().to_string();
        let removed = if entry.metadata().is_dir() {
            remove_tree(client, &path)
        } else {
            client
                .remove_file(&path)
                .map_err(|err| CliError::io(&path, &err))
        };
        match removed {
            Ok(()) => {}
            // Removed by someone else meanwhile: the goal is reached.
            Err(err) if err.reason.contains("no such") => {}
            Err(err) => return Err(err),
        }
    }
    client
        .remove_dir(dir)
        .map_err(|err| CliError::io(dir, &err))
}

/// Runs `dfs mv`.
pub fn mv(client: &Client, args: &MvArgs) -> Result<(), CliError> {
    if args.exchange {
        return client
            .exchange(&args.from, &args.to)
            .map_err(|err| CliError::io(&args.from, &err));
    }
    let to = match client.metadata(&args.to) {
        // Like mv(1): an existing directory target means "into it".
        Ok(meta) if meta.is_dir() => join(&args.to, base_name(&args.from)),
        Ok(_) => args.to.clone(),
        Err(err) if is_not_found(&err) => args.to.clone(),
        Err(err) => return Err(CliError::io(&args.to, &err)),
    };
    client
        .rename(&args.from, &to)
        .map_err(|err| CliError::io(&args.from, &err))
}
