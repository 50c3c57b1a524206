//! `dfs-fuse NAMESERVER_URL MOUNTPOINT [-o opts] [-f]`: mount a DFS cluster.

use clap::Parser;
use dfs_fuse::{daemon, options::Args, session};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    let mut cfg = match args.into_config() {
        Ok(cfg) => cfg,
        Err(msg) => {
            eprintln!("dfs-fuse: {msg}");
            return ExitCode::from(2);
        }
    };
    if !cfg.foreground && cfg.ready_fd.is_none() {
        return daemon::spawn_and_wait();
    }
    if cfg.ready_fd.is_some() {
        daemon::detach_session();
    }
    // Absolute paths: a daemon moves to / once ready.
    cfg.mountpoint = std::path::absolute(&cfg.mountpoint).unwrap_or(cfg.mountpoint);
    cfg.cache_dir = std::path::absolute(&cfg.cache_dir).unwrap_or(cfg.cache_dir);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,dfs_fuse=info")),
        )
        .init();
    let ready_fd = cfg.ready_fd;
    let log = cfg.cache_dir.join("dfs-fuse.log");
    let result = session::run(cfg, move || {
        if let Some(fd) = ready_fd {
            daemon::report_ready(fd, &log);
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dfs-fuse: {err:#}");
            ExitCode::FAILURE
        }
    }
}
