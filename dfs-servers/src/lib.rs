//! The DFS servers as libraries; each binary is a thin wrapper around one module.
//!
//! Every server exposes `run(listener, config, shutdown)` so tests start it in-process on
//! `127.0.0.1:0`, and a `main`-style entry used by its binary.

pub mod common;
pub mod fileserver;
pub mod lockserver;
pub mod nameserver;
