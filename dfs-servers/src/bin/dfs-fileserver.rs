//! `dfs-fileserver`: stores immutable file versions for DFS and registers with the nameserver.

use clap::Parser;
use dfs_servers::common;
use dfs_servers::fileserver::{Args, Fileserver};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_tracing();
    let config = Args::parse().into_config()?;
    let (listener, local) = common::bind(&config.listen).await?;
    let server = Fileserver::start(listener, config).await?;
    common::announce_ready("dfs-fileserver", local, server.tls());
    server.serve(common::shutdown_signal()).await
}
