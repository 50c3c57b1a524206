//! `dfs put`, `dfs get` and `dfs cat`: copying whole files between the local disk and the
//! cluster through `dfs_client`'s file API, so every copy has the mount's contract (write
//! lease, publish on close, atomic new version).
//!
//! A put never publishes a partial file: the remote file is written only from a complete
//! local source (a regular file is read directly; a pipe, FIFO or stdin is first read whole
//! into an anonymous local temporary file), and when anything fails before `close()` the
//! open remote file is abandoned without being dropped (its `Drop` would publish).
//! A get streams each file (through `dfs_client`'s protocol layer, checksum-verified) into
//! a temporary file next to the target and renames it into place.

use crate::common::{base_name, is_not_found, join, CliError, Progress};
use crate::interrupt;
use clap::Args;
use dfs_client::blocking::{Client, File};
use dfs_client::remote::Remote;
use dfs_proto::DfsPath;
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Size of one copy step.
const CHUNK: usize = 1 << 20;

/// `dfs put`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  dfs put report.pdf /docs/                 # -> /docs/report.pdf
  dfs put a.txt b.txt /docs                 # several files into a directory
  dfs put -r ./photos /backup/photos        # a whole tree
  tar c . | dfs put - /backup/site.tar      # stdin")]
pub struct PutArgs {
    /// Copy directories and everything under them.
    #[arg(short, long)]
    pub recursive: bool,
    /// Local files (`-` is stdin), then the remote target (a directory, or a file name
    /// when there is one source).
    #[arg(required = true, num_args = 2.., value_name = "LOCAL... REMOTE")]
    pub paths: Vec<String>,
}

/// `dfs get`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  dfs get /docs/report.pdf .                # -> ./report.pdf
  dfs get /docs/a.txt /docs/b.txt ./out/    # several files into a directory
  dfs get -r /backup/photos ./photos        # a whole tree")]
pub struct GetArgs {
    /// Copy directories and everything under them.
    #[arg(short, long)]
    pub recursive: bool,
    /// Remote files, then the local target (a directory, or a file name when there is one
    /// source).
    #[arg(required = true, num_args = 2.., value_name = "REMOTE... LOCAL")]
    pub paths: Vec<String>,
}

/// `dfs cat`.
#[derive(Args, Debug)]
#[command(after_help = "Example:
  dfs cat /etc/motd /docs/notes.txt | less")]
pub struct CatArgs {
    /// Remote files, written to stdout in order.
    #[arg(required = true, value_name = "REMOTE")]
    pub paths: Vec<String>,
}

/// One file to put: its local source and its remote target.
struct PutItem {
    source: Option<PathBuf>,
    target: String,
    size: u64,
}

/// Runs `dfs put`.
pub fn put(client: &Client, args: &PutArgs) -> Result<(), CliError> {
    let (target, sources) = split_last(&args.paths)?;
    let target_is_dir = remote_is_dir(client, target)?;
    if target.ends_with('/') && !target_is_dir {
        return Err(CliError::new(target, "no such directory"));
    }
    if sources.len() > 1 && !target_is_dir {
        return Err(CliError::usage(
            target,
            "not a directory (several sources need a directory target)",
        ));
    }
    // Plan everything first: a missing local file fails before anything is sent.
    let mut dirs = Vec::new();
    let mut items = Vec::new();
    for source in sources {
        if source == "-" {
            if target_is_dir {
                return Err(CliError::usage(
                    "-",
                    "stdin needs a file name as the target",
                ));
            }
            items.push(PutItem {
                source: None,
                target: target.to_owned(),
                size: 0,
            });
            continue;
        }
        let path = Path::new(source);
        let meta = fs::metadata(path).map_err(|err| CliError::io(source, &err))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let remote = if target_is_dir {
            join(target, &name)
        } else {
            target.to_owned()
        };
        if meta.is_dir() {
            if !args.recursive {
                return Err(CliError::new(
                    source,
                    "is a directory (use -r to copy a tree)",
                ));
            }
            plan_local_tree(path, &remote, &mut dirs, &mut items)?;
        } else {
            items.push(PutItem {
                source: Some(path.to_owned()),
                target: remote,
                size: meta.len(),
            });
        }
    }
    let bytes = items.iter().map(|i| i.size).sum();
    let mut progress = Progress::new(items.len() as u64, bytes, args.recursive);
    for dir in &dirs {
        client
            .create_dir_all(dir)
            .map_err(|err| CliError::io(dir, &err))?;
    }
    for item in &items {
        put_one(client, item, &progress)?;
        progress.file_done();
    }
    progress.finish();
    Ok(())
}

/// Adds the tree under local directory `dir` to the plan, to be copied as `remote`.
fn plan_local_tree(
    dir: &Path,
    remote: &str,
    dirs: &mut Vec<String>,
    items: &mut Vec<PutItem>,
) -> Result<(), CliError> {
    dirs.push(remote.to_owned());
    let shown = dir.display();
    let mut entries = fs::read_dir(dir)
        .map_err(|err| CliError::io(&shown, &err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| CliError::io(&shown, &err))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = fs::metadata(&path).map_err(|err| CliError::io(path.display(), &err))?;
        let target = join(remote, &name);
        if meta.is_dir() {
            plan_local_tree(&path, &target, dirs, items)?;
        } else {
            items.push(PutItem {
                source: Some(path),
                target,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

/// Puts one file: open the source, create the remote file, copy, `close()` (publish).
fn put_one(client: &Client, item: &PutItem, progress: &Progress) -> Result<(), CliError> {
    let shown = item
        .source
        .as_ref()
        .map_or_else(|| "-".to_owned(), |p| p.display().to_string());
    // A staged source's bytes are counted while staged, a regular file's while copied.
    let (mut source, count): (Box<dyn Read>, bool) = match &item.source {
        Some(path) => {
            let file = fs::File::open(path).map_err(|err| CliError::io(&shown, &err))?;
            let regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
            if regular {
                drop(file);
                return upload_one(client, path, &shown, &item.target, progress);
            } else {
                (Box::new(stage(file, &shown, progress)?), false)
            }
        }
        None => (
            Box::new(stage(io::stdin().lock(), &shown, progress)?),
            false,
        ),
    };
    let target = &item.target;
    let existed = match client.metadata(target) {
        Ok(meta) if meta.is_dir() => {
            return Err(CliError::new(target, "is a directory"));
        }
        Ok(_) => true,
        Err(err) if is_not_found(&err) => false,
        Err(err) => return Err(CliError::io(target, &err)),
    };
    let mut file = client
        .create(target)
        .map_err(|err| CliError::io(target, &err))?;
    // Created by this open only if it was missing and is still the empty version 0 (not
    // created and published by someone else in between): only then is removing it ours.
    let existed = existed || file.entry().version != 0;
    // Interrupted from here on: the process ends without dropping `file` (no publish);
    // a file this put created is removed again so that no empty name is left behind.
    let _guard = (!existed).then(|| {
        let (client, target) = (client.clone(), target.clone());
        interrupt::on_interrupt(move || {
            let _ = client.remove_file(&target);
        })
    });
    if let Err((err, local)) = copy(&mut source, &mut file, progress, count) {
        abandon(file);
        if !existed {
            let _ = client.remove_file(target);
        }
        return Err(CliError::io(if local { &shown } else { target }, &err));
    }
    progress.stage("publishing");
    file.close().map_err(|err| {
        let mut failed = CliError::io(target, &err);
        drop_kept_spool(&mut failed);
        // The open created an empty entry for a new file; a failed put leaves no name.
        if !existed {
            let _ = client.remove_file(target);
        }
        failed
    })
}

/// Puts a regular file: streamed from where it is to the fileservers (no local copy in
/// between, [`Client::upload`]), with the same guarantees as a copy and `close()`.
fn upload_one(
    client: &Client,
    source: &Path,
    shown: &str,
    target: &str,
    progress: &Progress,
) -> Result<(), CliError> {
    let existed = match client.metadata(target) {
        Ok(meta) if meta.is_dir() => return Err(CliError::new(target, "is a directory")),
        Ok(_) => true,
        Err(err) if is_not_found(&err) => false,
        Err(err) => return Err(CliError::io(target, &err)),
    };
    // Interrupted: nothing was published (the publish is the upload's last step); a name
    // this put created is removed again, unless someone gave it content meanwhile.
    let remove_created = |client: &Client| {
        if client.metadata(target).is_ok_and(|m| m.is_empty()) {
            let _ = client.remove_file(target);
        }
    };
    let _guard = (!existed).then(|| {
        let (client, target) = (client.clone(), target.to_owned());
        interrupt::on_interrupt(move || {
            if client.metadata(&target).is_ok_and(|m| m.is_empty()) {
                let _ = client.remove_file(&target);
            }
        })
    });
    progress.stage("uploading");
    let mut shown_bytes = 0;
    let result = client.upload_with_progress(source, target, |sent| {
        if sent > shown_bytes {
            progress.bytes(sent - shown_bytes);
            shown_bytes = sent;
        }
    });
    match result {
        Ok(meta) => {
            progress.bytes(meta.len().saturating_sub(shown_bytes));
            Ok(())
        }
        Err(err) => {
            if !existed {
                remove_created(client);
            }
            // A failure to read the source names the source, everything else the target.
            // The upload's error does not say which side failed, so the source is tried
            // again: unreadable now, it was the cause.
            let local = fs::File::open(source)
                .and_then(|mut f| f.read(&mut [0u8; 64 << 10]))
                .is_err();
            Err(CliError::io(if local { shown } else { target }, &err))
        }
    }
}

/// A failed `close()` keeps the unpublished copy in a spool file and names it in the error,
/// for programs that have no other copy; a put still has its source, so the spool file is
/// removed and the note dropped from the message.
fn drop_kept_spool(err: &mut CliError) {
    const NOTE: &str = " (changes kept in ";
    let Some(start) = err.reason.find(NOTE) else {
        return;
    };
    let rest = &err.reason[start + NOTE.len()..];
    let Some(end) = rest.find(')') else {
        return;
    };
    let kept = Path::new(&rest[..end]);
    let is_spool = kept
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(".dfs-spool-"));
    if is_spool && fs::remove_file(kept).is_ok() {
        err.reason
            .replace_range(start..start + NOTE.len() + end + 1, "");
    }
}

/// Gives up a remote file without publishing it: a `dfs_client` file publishes on drop, so
/// it is not dropped. Its write lease expires by itself (TTL plus lock-delay); its spool
/// file is in the process's own spool directory, removed when the command ends.
fn abandon(file: File) {
    std::mem::forget(file);
}

/// Reads a non-regular source (pipe, FIFO, stdin) whole into an anonymous local temporary
/// file, so that the remote file is opened (lease, new entry) only once the source ended.
fn stage(mut source: impl Read, shown: &str, progress: &Progress) -> Result<fs::File, CliError> {
    let mut spool = tempfile::tempfile().map_err(|err| CliError::io("temporary file", &err))?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(CliError::io(shown, &err)),
        };
        spool
            .write_all(&buf[..n])
            .map_err(|err| CliError::io("temporary file", &err))?;
        progress.bytes(n as u64);
    }
    spool
        .rewind()
        .map_err(|err| CliError::io("temporary file", &err))?;
    Ok(spool)
}

/// Copies `source` into `dest`; on failure says whether the local side failed (`true`).
fn copy(
    source: &mut dyn Read,
    dest: &mut dyn Write,
    progress: &Progress,
    count: bool,
) -> Result<(), (io::Error, bool)> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err((err, true)),
        };
        dest.write_all(&buf[..n]).map_err(|err| (err, false))?;
        if count {
            progress.bytes(n as u64);
        }
    }
}

/// Whether remote `path` is an existing directory (`false` when it does not exist).
fn remote_is_dir(client: &Client, path: &str) -> Result<bool, CliError> {
    match client.metadata(path) {
        Ok(meta) => Ok(meta.is_dir()),
        Err(err) if is_not_found(&err) => Ok(false),
        Err(err) => Err(CliError::io(path, &err)),
    }
}

/// The last argument (the target) and the ones before it (the sources).
fn split_last(paths: &[String]) -> Result<(&str, &[String]), CliError> {
    match paths.split_last() {
        Some((target, sources)) if !sources.is_empty() => Ok((target, sources)),
        _ => Err(CliError::usage("dfs", "a source and a target are needed")),
    }
}

/// One file to get.
struct GetItem {
    source: String,
    target: PathBuf,
    size: u64,
    /// The remote file's permission bits, given to the local copy.
    mode: u32,
}

/// Runs `dfs get`.
pub fn get(client: &Client, downloader: &Downloader, args: &GetArgs) -> Result<(), CliError> {
    let (target, sources) = split_last(&args.paths)?;
    let target_path = Path::new(target);
    let target_is_dir = target_path.is_dir();
    if sources.len() > 1 && !target_is_dir {
        return Err(CliError::usage(
            target,
            "not a directory (several sources need a directory target)",
        ));
    }
    let mut dirs = Vec::new();
    let mut items = Vec::new();
    for source in sources {
        let meta = client
            .metadata(source)
            .map_err(|err| CliError::io(source, &err))?;
        let local = if target_is_dir {
            target_path.join(base_name(source))
        } else {
            target_path.to_owned()
        };
        if meta.is_dir() {
            if !args.recursive {
                return Err(CliError::new(
                    source,
                    "is a directory (use -r to copy a tree)",
                ));
            }
            plan_remote_tree(client, source, &local, &mut dirs, &mut items)?;
        } else {
            items.push(GetItem {
                source: source.clone(),
                target: local,
                size: meta.len(),
                mode: meta.mode(),
            });
        }
    }
    let bytes = items.iter().map(|i| i.size).sum();
    let mut progress = Progress::new(items.len() as u64, bytes, args.recursive);
    for dir in &dirs {
        fs::create_dir_all(dir).map_err(|err| CliError::io(dir.display(), &err))?;
    }
    for item in &items {
        get_one(downloader, item, &progress)?;
        progress.file_done();
    }
    progress.finish();
    Ok(())
}

/// Adds the remote tree under `dir` to the plan, to be copied to local `local`.
fn plan_remote_tree(
    client: &Client,
    dir: &str,
    local: &Path,
    dirs: &mut Vec<PathBuf>,
    items: &mut Vec<GetItem>,
) -> Result<(), CliError> {
    dirs.push(local.to_owned());
    let entries = client
        .read_dir(dir)
        .map_err(|err| CliError::io(dir, &err))?;
    for entry in entries {
        let source = entry.path().to_string();
        let target = local.join(entry.file_name());
        if entry.metadata().is_dir() {
            plan_remote_tree(client, &source, &target, dirs, items)?;
        } else {
            items.push(GetItem {
                source,
                target,
                size: entry.metadata().len(),
                mode: entry.metadata().mode(),
            });
        }
    }
    Ok(())
}

/// Downloads for `get`: the protocol layer's [`Remote`] on a runtime of its own, so that a
/// file is streamed straight into the temporary file next to its target (no spool copy in
/// the temp directory, which may be too small) while the progress display follows it.
pub struct Downloader {
    runtime: tokio::runtime::Runtime,
    remote: Remote,
}

impl Downloader {
    /// A downloader for the cluster whose nameserver is at `nameserver`. Must be made after
    /// [`crate::interrupt::install`] (its runtime thread must not take Ctrl-C).
    pub fn new(access: &crate::common::Access) -> Result<Downloader, CliError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| CliError::io("runtime", &err))?;
        Ok(Downloader {
            runtime,
            remote: access.remote(),
        })
    }

    /// Streams the current version of `source` into `dest` (checksum-verified, trying every
    /// fileserver that holds it), asking again when that version vanished everywhere
    /// meanwhile (a newer publish replaced it), as `dfs_client`'s open does.
    fn download(&self, source: &str, dest: &Path, progress: &Progress) -> io::Result<()> {
        let path = DfsPath::parse(source).map_err(io::Error::from)?;
        let counted = std::cell::Cell::new(0u64);
        let result = self.runtime.block_on(async {
            let download = self.remote.download_current(&path, dest);
            tokio::pin!(download);
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    done = &mut download => break done,
                    _ = tick.tick() => {
                        // A retry starts the file again: count only bytes beyond the most seen.
                        let len = fs::metadata(dest).map_or(0, |m| m.len());
                        progress.bytes(len.saturating_sub(counted.get()));
                        counted.set(counted.get().max(len));
                    }
                }
            }
        });
        match result {
            Ok(entry) => {
                progress.bytes(entry.size.saturating_sub(counted.get()));
                Ok(())
            }
            Err(err) => {
                progress.bytes_back(counted.get());
                Err(err.into())
            }
        }
    }
}

/// Gets one file: stream it into a temporary file next to the target, rename into place
/// (the target is the old file or the whole new one; Ctrl-C removes the temporary). Not
/// fsynced, as `cp`, `curl -o` and `rsync` do not: the copy is as durable as theirs.
fn get_one(downloader: &Downloader, item: &GetItem, progress: &Progress) -> Result<(), CliError> {
    let shown = item.target.display().to_string();
    let parent = match item.target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = item
        .target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}.dfs-get-"))
        .tempfile_in(&parent)
        .map_err(|err| CliError::io(&shown, &err))?;
    let temp_path = temp.path().to_owned();
    let _guard = interrupt::on_interrupt(move || {
        let _ = fs::remove_file(&temp_path);
    });
    downloader
        .download(&item.source, temp.path(), progress)
        .map_err(|err| CliError::io(&item.source, &err))?;
    // The temporary file is private (0600); the copy gets the remote file's permissions.
    let mode = fs::Permissions::from_mode(item.mode & 0o777);
    fs::set_permissions(temp.path(), mode).map_err(|err| CliError::io(&shown, &err))?;
    temp.persist(&item.target)
        .map_err(|err| CliError::io(&shown, &err.error))?;
    Ok(())
}

/// Runs `dfs cat`.
pub fn cat(client: &Client, args: &CatArgs) -> Result<(), CliError> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let progress = Progress::new(0, 0, false);
    for path in &args.paths {
        let mut file = client.open(path).map_err(|err| CliError::io(path, &err))?;
        match copy(&mut file, &mut out, &progress, false) {
            Ok(()) => {}
            Err((err, _)) if err.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err((err, true)) => return Err(CliError::io(path, &err)),
            Err((err, false)) => return Err(CliError::io("stdout", &err)),
        }
    }
    out.flush().map_err(|err| CliError::io("stdout", &err))
}
