//! A fault-injecting HTTP proxy: forwards to a server, and for chosen requests lets the server
//! commit but breaks the reply on the way back (the "lost reply" of a network partition).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::TryStreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Which replies to lose: those of requests whose path starts with `path_prefix`, the first
/// `count` of them.
#[derive(Clone, Debug)]
pub struct DropRule {
    /// e.g. `/v1/meta/publish` or `/v1/blobs/`.
    pub path_prefix: String,
    /// How many matching replies to lose.
    pub count: usize,
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    rule: DropRule,
    dropped: AtomicUsize,
    forwarded: AtomicUsize,
}

/// A running proxy; its counters say how many replies it lost and requests it forwarded.
pub struct LossyProxy {
    /// The proxy's own base URL; give it to clients instead of the upstream's.
    pub url: String,
    state: Arc<ProxyState>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl LossyProxy {
    /// Starts a proxy to `upstream` on `127.0.0.1:0`, on the current tokio runtime.
    pub async fn start(upstream: &str, rule: DropRule) -> LossyProxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: dfs_proto::client::http_client(),
            rule,
            dropped: AtomicUsize::new(0),
            forwarded: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        LossyProxy {
            url,
            state,
            _stop: stop_tx,
        }
    }

    /// Replies lost so far.
    pub fn dropped(&self) -> usize {
        self.state.dropped.load(Ordering::SeqCst)
    }

    /// Requests forwarded so far.
    pub fn forwarded(&self) -> usize {
        self.state.forwarded.load(Ordering::SeqCst)
    }
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let mut upstream = state.http.request(
        parts.method.clone(),
        format!("{}{path_and_query}", state.upstream),
    );
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST {
            upstream = upstream.header(name, value);
        }
    }
    let stream = body.into_data_stream();
    let reply = upstream
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    state.forwarded.fetch_add(1, Ordering::SeqCst);
    let reply = match reply {
        Ok(reply) => reply,
        Err(err) => {
            return Response::builder()
                .status(502)
                .body(Body::from(format!("proxy: upstream failed: {err}")))
                .expect("static response");
        }
    };
    let status = reply.status();
    let headers = reply.headers().clone();
    // Read the whole reply first: the server has committed whatever it did.
    let bytes = reply.bytes().await.unwrap_or_default();
    let lose = parts.uri.path().starts_with(&state.rule.path_prefix)
        && state
            .dropped
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < state.rule.count).then_some(n + 1)
            })
            .is_ok();
    let mut builder = Response::builder().status(status);
    for (name, value) in &headers {
        if name != axum::http::header::TRANSFER_ENCODING && name != axum::http::header::CONNECTION {
            builder = builder.header(name, value);
        }
    }
    if lose {
        // Headers promise a body that never comes: the client sees a broken connection.
        let broken = futures_util::stream::once(async {
            Err::<bytes::Bytes, std::io::Error>(std::io::Error::other("reply lost"))
        });
        return builder
            .body(Body::from_stream(broken.into_stream()))
            .expect("valid response");
    }
    builder.body(Body::from(bytes)).expect("valid response")
}
