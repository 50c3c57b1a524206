//! What every cluster subcommand shares: the global `--nameserver` and `--key` options, the one-line
//! error type with its exit code, DFS path helpers and the progress display.

use clap::Args;
use dfs_client::remote::Remote;
use dfs_proto::auth::{ClientKey, Credential};
use dfs_proto::client::{FileClient, LockClient, NameClient};
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Files and transfers at least this large get a progress bar (on a terminal).
pub const PROGRESS_THRESHOLD: u64 = 1 << 20;

/// How to reach the cluster; flattened into every cluster subcommand so that
/// `dfs ls / --nameserver URL` and `dfs --nameserver URL ls /` both work.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// The nameserver's base URL.
    #[arg(
        long,
        global = true,
        env = "DFS_NAMESERVER",
        default_value = "http://127.0.0.1:7000",
        value_name = "URL"
    )]
    pub nameserver: String,
    /// PEM certificate of the CA that signed the servers' certificates, for an https://
    /// cluster (default: the public web roots).
    #[arg(long, global = true, env = "DFS_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Client key file (`dfs keygen client`); every request is authenticated with it.
    #[arg(
        long = "key",
        id = "client_key",
        global = true,
        env = dfs_proto::auth::KEY_ENV,
        value_name = "FILE"
    )]
    pub key: Option<PathBuf>,
}

/// Clients of the cluster's servers that all send the key given with `--key`/`DFS_KEY`.
#[derive(Debug, Clone)]
pub struct Access {
    /// The nameserver's base URL.
    pub nameserver: String,
    credential: Option<Credential>,
}

impl Access {
    /// The nameserver's client.
    pub fn names(&self) -> NameClient {
        let names = NameClient::new(&self.nameserver);
        match &self.credential {
            Some(credential) => names.with_credential(credential.clone()),
            None => names,
        }
    }

    /// The client of the lockserver at `url`.
    pub fn locks(&self, url: &str) -> LockClient {
        let locks = LockClient::new(url);
        match &self.credential {
            Some(credential) => locks.with_credential(credential.clone()),
            None => locks,
        }
    }

    /// A client of any fileserver.
    pub fn files(&self) -> FileClient {
        let files = FileClient::new();
        match &self.credential {
            Some(credential) => files.with_credential(credential.clone()),
            None => files,
        }
    }

    /// The protocol layer of `dfs-client` with the same key.
    pub fn remote(&self) -> Remote {
        let remote = Remote::new(&self.nameserver);
        match &self.credential {
            Some(credential) => remote.with_credential(credential.clone()),
            None => remote,
        }
    }
}

impl ClusterArgs {
    /// Makes `--ca` the trust of every client this process builds (the data commands' and
    /// the admin views' alike).
    pub fn install_tls(&self) -> Result<(), CliError> {
        let tls = dfs_proto::tls::TlsConfig {
            ca: self.ca.clone(),
        };
        tls.install_default().map_err(|err| {
            let subject = self.ca.as_deref().unwrap_or(std::path::Path::new("--ca"));
            CliError::new(subject.display(), err)
        })
    }

    /// The key `--key` (or `DFS_KEY`) names, read now so that a bad path is one clear error
    /// before anything is sent.
    pub fn client_key(&self) -> Result<Option<ClientKey>, CliError> {
        match &self.key {
            Some(path) => ClientKey::load(path)
                .map(Some)
                .map_err(|err| CliError::new(path.display(), err)),
            None => Ok(None),
        }
    }

    /// Clients of the servers, with the key.
    pub fn access(&self) -> Result<Access, CliError> {
        Ok(Access {
            nameserver: self.nameserver.clone(),
            credential: self.client_key()?.map(|key| key.credential()),
        })
    }

    /// A blocking client of the cluster whose spool files (its local copies of open files)
    /// go to `spool`, a directory of this process that is removed when it ends (also on
    /// Ctrl-C), so that an abandoned put leaves nothing in the temp directory. Must be
    /// called after [`crate::interrupt::install`], so that its runtime threads never take
    /// Ctrl-C.
    pub fn client(&self, spool: &Path) -> Result<dfs_client::blocking::Client, CliError> {
        let mut builder = dfs_client::blocking::Client::builder(&self.nameserver).spool_dir(spool);
        if let Some(key) = self.client_key()? {
            builder = builder.key(key);
        }
        builder
            .build()
            .map_err(|err| CliError::io(&self.nameserver, &err))
    }
}

/// A failure of a subcommand: printed as one line `dfs: SUBJECT: reason`, exit 1 (or 2 for
/// a usage error the argument parser could not see, such as two sources and a file target).
#[derive(Debug)]
pub struct CliError {
    /// What the error is about: a local or remote path, or a server URL.
    pub subject: String,
    /// Why, in one line.
    pub reason: String,
    /// Whether this is a usage error (exit 2).
    pub usage: bool,
}

impl CliError {
    /// A failure about `subject`.
    pub fn new(subject: impl fmt::Display, reason: impl fmt::Display) -> CliError {
        let subject = subject.to_string();
        let mut reason = one_line(&reason.to_string());
        // "dfs: /a: /a is a directory" and "dfs: /a: no such file: /a" say it twice.
        if let Some(rest) = reason.strip_suffix(&format!(": {subject}")) {
            reason = rest.to_owned();
        } else if let Some(rest) = reason.strip_prefix(&format!("{subject} ")) {
            reason = rest.to_owned();
        }
        CliError {
            subject: printable(&subject),
            reason: printable(&reason),
            usage: false,
        }
    }

    /// A usage error about `subject` (exit 2).
    pub fn usage(subject: impl fmt::Display, reason: impl fmt::Display) -> CliError {
        CliError {
            usage: true,
            ..CliError::new(subject, reason)
        }
    }

    /// An I/O error (local or from the cluster) about `subject`: the server's message
    /// without its code prefix, or the OS error.
    pub fn io(subject: impl fmt::Display, err: &io::Error) -> CliError {
        CliError::new(subject, reason(err))
    }

    /// The exit code: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        if self.usage {
            ExitCode::from(2)
        } else {
            ExitCode::FAILURE
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dfs: {}: {}", self.subject, self.reason)
    }
}

/// The reason of an I/O error for a person: the cluster's message when there is one.
pub fn reason(err: &io::Error) -> String {
    if let Some(api) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<dfs_proto::ApiError>())
    {
        if let Some(url) = api
            .message
            .strip_prefix("request failed: error sending request for url (")
            .and_then(|rest| rest.split(&[')', '?'][..]).next())
        {
            let server = url.split("/v1/").next().unwrap_or(url);
            if api.message.contains(dfs_proto::error::CERTIFICATE_HINT) {
                return format!(
                    "cannot reach {server}: {}",
                    dfs_proto::error::CERTIFICATE_HINT
                );
            }
            return format!("cannot reach {server} (server down or unreachable)");
        }
        return match api.code {
            dfs_proto::ErrorCode::Unavailable | dfs_proto::ErrorCode::Internal
                if !api.message.contains(&api.code.to_string()) =>
            {
                format!("{} ({})", api.message, api.code)
            }
            _ => api.message.clone(),
        };
    }
    match err.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => err.to_string(),
    }
}

/// `text` with control characters escaped (`\u{1}`), so that a refused name cannot
/// break the one-line error or the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The first line of `text`, so that an error is always one line.
fn one_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// Whether `err` is the cluster's (or the OS's) "not found".
pub fn is_not_found(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound
}

/// `dir/name` as a DFS path string (`/` + name at the root).
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The last component of a DFS path (`""` for `/`).
pub fn base_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

/// A progress display for transfers: a bar of bytes with files done, rate and ETA, shown
/// only when stderr is a terminal and the work is large (or recursive) enough to need one.
pub struct Progress {
    bar: Option<ProgressBar>,
    files_total: u64,
    files_done: u64,
}

impl Progress {
    /// A display for `files` files of `bytes` bytes in all; `recursive` copies always get
    /// one (on a terminal), single transfers from [`PROGRESS_THRESHOLD`] on.
    pub fn new(files: u64, bytes: u64, recursive: bool) -> Progress {
        let wanted = recursive || bytes >= PROGRESS_THRESHOLD;
        let bar = (wanted && io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(bytes);
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let progress = Progress {
            bar,
            files_total: files,
            files_done: 0,
        };
        progress.message();
        progress
    }

    fn message(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{}/{} files", self.files_done, self.files_total));
        }
    }

    /// Says what the current file waits for (a put's upload and publish in `close()`,
    /// which the byte count does not follow), until the next file.
    pub fn stage(&self, what: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{}/{} files, {what}",
                self.files_done, self.files_total
            ));
        }
    }

    /// `bytes` more bytes were moved.
    pub fn bytes(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    /// `bytes` counted for a transfer that failed or starts over are taken back.
    pub fn bytes_back(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bar.position().saturating_sub(bytes));
        }
    }

    /// One more file is done.
    pub fn file_done(&mut self) {
        self.files_done += 1;
        self.message();
    }

    /// Removes the display (so the shell prompt and error lines stay clean).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
