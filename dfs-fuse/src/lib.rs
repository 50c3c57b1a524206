//! The DFS mount: filesystem logic as a library, a thin fuser adapter, and the binary.
//!
//! Contract (docs/SEMANTICS.md): download on open, upload on close, atomic publish,
//! automatic write lease with fencing. [`fs::DfsFs`] holds the logic as async methods that
//! tests drive without the kernel; [`adapter::Adapter`] only translates FUSE calls. The client
//! protocol (leases, uploads, publish) is `dfs-client`'s; the mount keeps inodes, handles,
//! its cache and the kernel adapter.
//!
//! The whole command is a library call too: [`daemon::run_mount`] is `dfs-fuse URL DIR`
//! (also `dfs mount`, and the `mount.fuse.dfs` helper through [`daemon::run_mount_helper`]),
//! and [`session::run`] mounts in the foreground of any program (`dfs up`).

pub mod adapter;
pub mod attr;
pub mod cache;
pub mod cache_state;
pub mod daemon;
pub mod falloc;
pub mod fs;
pub mod inodes;
pub mod options;
pub mod passthrough;
pub mod session;
pub mod view;
pub mod writeback;
pub mod writer;
pub mod xattr;
