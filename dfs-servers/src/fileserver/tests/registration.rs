//! Registration and heartbeats against a stub of the nameserver's two registry routes.

use super::{eventually, TestServer};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use dfs_proto::names::{HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse};
use dfs_proto::DfsPath;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Stub {
    registers: Mutex<Vec<RegisterRequest>>,
    heartbeats: AtomicU64,
    forget: AtomicBool,
}

impl Stub {
    fn registers(&self) -> Vec<RegisterRequest> {
        self.registers.lock().unwrap().clone()
    }
}

async fn register(
    State(s): State<Arc<Stub>>,
    Json(req): Json<RegisterRequest>,
) -> Json<RegisterResponse> {
    s.registers.lock().unwrap().push(req);
    s.forget.store(false, Ordering::SeqCst);
    Json(RegisterResponse {
        heartbeat_interval_ms: 30,
        lockserver: None,
    })
}

async fn heartbeat(
    State(s): State<Arc<Stub>>,
    Json(_): Json<HeartbeatRequest>,
) -> Json<HeartbeatResponse> {
    s.heartbeats.fetch_add(1, Ordering::SeqCst);
    Json(HeartbeatResponse {
        known: !s.forget.load(Ordering::SeqCst),
    })
}

async fn start_stub(listener: tokio::net::TcpListener) -> Arc<Stub> {
    let stub = Arc::new(Stub::default());
    let app = Router::new()
        .route("/v1/fileservers/register", post(register))
        .route("/v1/fileservers/heartbeat", post(heartbeat))
        .with_state(stub.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    stub
}

#[tokio::test]
async fn registers_heartbeats_and_reregisters() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ns = format!("http://{}", listener.local_addr().unwrap());
    let stub = start_stub(listener).await;
    let dir = tempfile::tempdir().unwrap();
    let fs = TestServer::start(dir.path(), |c| {
        c.nameserver = ns.clone();
        c.dirs = vec![DfsPath::parse("/a").unwrap()];
    })
    .await;
    eventually("registered and heartbeating", || async {
        !stub.registers().is_empty() && stub.heartbeats.load(Ordering::SeqCst) >= 2
    })
    .await;
    let reg = stub.registers()[0].clone();
    assert_eq!(reg.id, fs.id);
    assert_eq!(reg.url, fs.url);
    assert!(reg.capacity_bytes > 0);
    assert!(reg.free_bytes <= reg.capacity_bytes);
    assert_eq!(reg.dirs, vec![DfsPath::parse("/a").unwrap()]);

    stub.forget.store(true, Ordering::SeqCst);
    eventually("registered again after known:false", || async {
        stub.registers().len() >= 2
    })
    .await;
    assert_eq!(stub.registers()[1].id, fs.id);
    fs.stop().await;
}

#[tokio::test]
async fn survives_nameserver_down_at_start() {
    // Reserve a port, free it, and start the nameserver there only later.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let dir = tempfile::tempdir().unwrap();
    let fs = TestServer::start(dir.path(), |c| {
        c.nameserver = format!("http://{addr}");
        c.advertise = Some("http://fs.example:7100".into());
    })
    .await;
    let c = super::client();
    c.upload_bytes(&fs.url, 1, 1, b"serving anyway".to_vec())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    c.healthz(&fs.url).await.unwrap();

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let stub = start_stub(listener).await;
    eventually("registered once the nameserver is up", || async {
        !stub.registers().is_empty()
    })
    .await;
    assert_eq!(stub.registers()[0].url, "http://fs.example:7100");
    fs.stop().await;
}
