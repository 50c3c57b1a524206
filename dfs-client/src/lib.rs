//! The one implementation of the DFS client protocol, and a file-like API over it.
//!
//! **File-like API** (for programs): [`Client`] (async) and [`blocking::Client`] open files
//! like `std::fs` does — [`Client::open`], [`Client::create`], [`Client::options`] — and
//! manage the namespace (`metadata`, `read_dir`, `create_dir`, `remove_file`, `rename`, ...).
//! A [`File`] is a whole-file local copy with the contract of the mount (docs/SEMANTICS.md,
//! docs/client.md): the whole version is downloaded at open into a spool file; a write-mode
//! open takes the file's write lease (a second writer anywhere gets
//! [`std::io::ErrorKind::ResourceBusy`]) and renews it in the background; [`File::close`]
//! publishes and returns `Ok` only once the new version is durable and committed; a fenced
//! or stale publish fails with [`std::io::ErrorKind::StaleNetworkFileHandle`].
//!
//! **Protocol layer** (used by the mount, `dfs-fuse`, and by the API above): [`remote`]
//! (cluster access, downloads with failover, uploads to all targets), [`leases`] (write
//! leases renewed in the background, per-token publish counters) and [`mod@write`] (a write
//! session publishing a local copy reached through [`write::LocalCopy`]).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tokio::io::AsyncWriteExt;
//! let client = dfs_client::Client::new("http://127.0.0.1:7000");
//! client.create_dir_all("/reports/2026").await?;
//! let mut file = client.options().append(true).create(true).open("/reports/2026/log").await?;
//! file.write_all(b"one more line\n").await?;
//! file.close().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod blocking;
mod client;
mod file;
pub mod leases;
pub mod remote;
pub mod write;
pub mod writeback;

pub use client::{key_from_env, Client, ClientBuilder, DirEntry, Metadata, OpenOptions};
pub use file::File;
