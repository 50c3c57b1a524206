//! `dfs-lockserver`: write leases with fencing tokens, over HTTP (docs/api/lockserver.md).

use clap::Parser;
use dfs_servers::common::{announce_ready, bind, init_tracing, shutdown_signal};
use dfs_servers::lockserver::{Args, LockServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let config = Args::parse().into_config()?;
    let server = LockServer::open(config.clone()).await?;
    let (listener, local) = bind(&config.listen).await?;
    announce_ready("dfs-lockserver", local, server.tls());
    server.serve(listener, shutdown_signal()).await
}
