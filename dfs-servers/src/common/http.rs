//! The serve loop: TCP_NODELAY, a header-read timeout, graceful shutdown, a ready line.

use axum::Router;
use dfs_proto::{ApiError, ErrorCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a client may take to send its request headers before the connection is dropped.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (up to 5 s). Plain HTTP; see [`serve_with_tls`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_with_tls(listener, router, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given (from [`super::tls::acceptor`]).
///
/// Every accepted socket gets TCP_NODELAY: without it a small reply waits ~40 ms for Nagle.
/// The TLS handshake runs in the connection's task, bounded by
/// [`super::tls::HANDSHAKE_TIMEOUT`], so a client that never speaks holds only its own task.
pub async fn serve_with_tls(
    listener: TcpListener,
    router: Router,
    tls: Option<super::tls::ServerTls>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                let watcher = graceful.watcher();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let served = match tls {
                        None => watcher.watch(connection(stream, service)).await,
                        Some(acceptor) => match super::tls::handshake(&acceptor, stream).await {
                            Some(stream) => watcher.watch(connection(stream, service)).await,
                            None => return,
                        },
                    };
                    if let Err(err) = served {
                        tracing::debug!(%err, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

/// One HTTP/1.1 connection with keep-alive and the header-read timeout, over any stream.
fn connection<S>(
    stream: S,
    service: TowerToHyperService<Router>,
) -> hyper::server::conn::http1::Connection<TokioIo<S>, TowerToHyperService<Router>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder.serve_connection(TokioIo::new(stream), service)
}

/// JSON answers for unknown routes (404) and wrong methods (405), instead of empty bodies.
pub fn api_fallbacks(router: Router) -> Router {
    router
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed here")
        })
}

/// Binds `addr` (`127.0.0.1:0` picks a free port) with a message that names the address.
pub async fn bind(addr: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {addr}: {err}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// The base URL of a server listening on `local`: `https://` when it serves TLS.
pub fn base_url(local: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{local}")
}

/// Prints the one line scripts and tests wait for, once the server can take requests:
/// `<name> listening on http://<addr>` (`https://` when `tls`).
pub fn announce_ready(name: &str, local: SocketAddr, tls: bool) {
    use std::io::Write;
    let url = base_url(local, tls);
    tracing::info!("{name} listening on {url}");
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{name} listening on {url}");
    let _ = out.flush();
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on SIGTERM or SIGINT, so binaries stop gracefully under systemd and Ctrl-C.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
