//! The one implementation of the DFS client protocol, and a file-like API over it.
//!
//! Lower half, used by the mount (`dfs-fuse`) and by any program: [`remote`] (cluster access,
//! downloads with failover, uploads to all targets), [`leases`] (write leases renewed in the
//! background, publish counters) and [`write`] (a write session publishing a local copy).
pub mod leases;
pub mod remote;
pub mod write;
