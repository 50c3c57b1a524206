//! `dfs-nameserver`: the namespace and fileserver map of DFS (see docs/api/nameserver.md).

use clap::Parser;
use dfs_servers::common::init_tracing;
use dfs_servers::nameserver::{main_with, Args};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    main_with(Args::parse()).await
}
