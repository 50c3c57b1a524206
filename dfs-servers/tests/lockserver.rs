//! Lockserver tests: real servers in-process on 127.0.0.1:0, real HTTP through `LockClient`,
//! and power-loss sweeps of the lease table on a simulated disk.

use dfs_proto::client::LockClient;
use dfs_proto::locks::{AcquireRequest, Lease, LeaseList};
use dfs_proto::{ApiError, DfsPath, ErrorCode};
use dfs_servers::common::crash_backend::CrashDisk;
use dfs_servers::lockserver::{self, Config, LockTable, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A lockserver running in this process until [`Server::stop`].
struct Server {
    client: LockClient,
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

fn config(data: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        data: data.to_path_buf(),
        // Lease logic under test; auth_matrix.rs runs the lockserver with keys.
        insecure: true,
        ..Config::default()
    }
}

async fn start(config: Config) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(lockserver::run(listener, config, async move {
        let _ = stopped.await;
    }));
    let client = LockClient::new(&url);
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.healthz().await.is_err() {
        assert!(Instant::now() < deadline, "lockserver did not come up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Server {
        client,
        url,
        stop,
        task,
    }
}

impl Server {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn p(text: &str) -> DfsPath {
    DfsPath::parse(text).unwrap()
}

fn req(client: &str, paths: &[&str]) -> AcquireRequest {
    AcquireRequest {
        paths: paths.iter().map(|s| p(s)).collect(),
        client: client.into(),
        ttl_ms: None,
    }
}

fn code(result: Result<impl std::fmt::Debug, ApiError>) -> ErrorCode {
    result.expect_err("expected an error").code
}

/// What a lease list says, without the time left (which moves).
fn shape(list: &LeaseList) -> (Vec<(u64, String, Vec<DfsPath>)>, u64) {
    let leases = list
        .leases
        .iter()
        .map(|l| (l.token, l.client.clone(), l.paths.clone()))
        .collect();
    (leases, list.next_token)
}

/// Polls `acquire` until it succeeds, failing after a generous deadline.
async fn acquire_eventually(client: &LockClient, req: &AcquireRequest, within: Duration) -> Lease {
    let deadline = Instant::now() + within;
    loop {
        match client.acquire(req).await {
            Ok(lease) => return lease,
            Err(err) => {
                assert_eq!(err.code, ErrorCode::Busy, "{err}");
                assert!(Instant::now() < deadline, "never became free: {err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn busy_conflicts_and_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path())).await;
    let a = s.client.acquire(&req("A", &["/a"])).await.unwrap();
    assert_eq!(a.paths, vec![p("/a")]);
    assert_eq!(a.client, "A");
    assert_eq!(a.ttl_ms, 10_000);
    assert!(a.expires_in_ms > 0 && a.expires_in_ms <= 10_000);

    // B wants /b and /a: /a is taken, so B gets neither.
    assert_eq!(
        code(s.client.acquire(&req("B", &["/b", "/a"])).await),
        ErrorCode::Busy
    );
    let list = s.client.list().await.unwrap();
    assert_eq!(list.leases.len(), 1, "a refused acquire must take nothing");
    // /b really is still free, and locks are exact: /a/child and / are not covered by /a.
    let b = s
        .client
        .acquire(&req("B", &["/b", "/a/child", "/"]))
        .await
        .unwrap();
    assert!(b.token > a.token);
    // A second client cannot take /b either, not even together with a free path.
    assert_eq!(
        code(s.client.acquire(&req("C", &["/c", "/b"])).await),
        ErrorCode::Busy
    );
    assert_eq!(s.client.list().await.unwrap().leases.len(), 2);
    s.stop().await;
}

#[tokio::test]
async fn reacquire_by_the_same_client_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path())).await;
    let first = s.client.acquire(&req("A", &["/x", "/y"])).await.unwrap();
    let next = s.client.list().await.unwrap().next_token;
    // Same set in another order: same lease, fresh deadline, no token spent.
    let mut again = req("A", &["/y", "/x"]);
    again.ttl_ms = Some(60_000);
    let second = s.client.acquire(&again).await.unwrap();
    assert_eq!(second.token, first.token);
    assert_eq!(second.ttl_ms, 60_000);
    assert!(second.expires_in_ms > 10_000, "deadline was extended");
    assert_eq!(s.client.list().await.unwrap().next_token, next);
    // A different set overlapping its own lease is refused, like anyone else's.
    assert_eq!(
        code(s.client.acquire(&req("A", &["/x"])).await),
        ErrorCode::Busy
    );
    assert_eq!(
        code(s.client.acquire(&req("B", &["/y", "/x"])).await),
        ErrorCode::Busy
    );
    assert_eq!(s.client.list().await.unwrap().leases.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn wrong_token_or_client_never_touches_a_lock() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path())).await;
    let a = s.client.acquire(&req("A", &["/a"])).await.unwrap();
    let before = shape(&s.client.list().await.unwrap());

    assert_eq!(
        code(s.client.release(a.token, "B").await),
        ErrorCode::LeaseExpired
    );
    assert_eq!(
        code(s.client.release(a.token + 1, "A").await),
        ErrorCode::LeaseExpired
    );
    assert_eq!(
        code(s.client.release(0, "A").await),
        ErrorCode::LeaseExpired
    );
    assert_eq!(
        code(s.client.renew(a.token, "B").await),
        ErrorCode::LeaseExpired
    );
    assert_eq!(
        code(s.client.renew(a.token + 7, "A").await),
        ErrorCode::LeaseExpired
    );
    assert_eq!(shape(&s.client.list().await.unwrap()), before);
    assert_eq!(
        code(s.client.acquire(&req("B", &["/a"])).await),
        ErrorCode::Busy
    );

    // The right pair works, and a released path is free at once (no lock-delay).
    let renewed = s.client.renew(a.token, "A").await.unwrap();
    assert_eq!(renewed.token, a.token);
    s.client.release(a.token, "A").await.unwrap();
    assert_eq!(
        code(s.client.release(a.token, "A").await),
        ErrorCode::LeaseExpired
    );
    let b = s.client.acquire(&req("B", &["/a"])).await.unwrap();
    assert!(b.token > a.token);
    s.stop().await;
}

#[tokio::test]
async fn expired_leases_free_their_paths_after_the_lock_delay() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.ttl_ms = 200;
    cfg.lock_delay_ms = 300;
    let s = start(cfg).await;
    let started = Instant::now();
    let a = s.client.acquire(&req("A", &["/e"])).await.unwrap();
    assert_eq!(a.ttl_ms, 200);
    let b = acquire_eventually(&s.client, &req("B", &["/e"]), Duration::from_secs(10)).await;
    // Never before TTL + lock-delay (a lower bound, so not a timing flake).
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(b.token > a.token);
    // The dead lease cannot be renewed or released, and B's lease is untouched by A's attempts.
    assert_eq!(
        code(s.client.renew(a.token, "A").await),
        ErrorCode::LeaseExpired
    );
    assert_eq!(
        code(s.client.release(a.token, "A").await),
        ErrorCode::LeaseExpired
    );
    let list = s.client.list().await.unwrap();
    assert!(list.leases.iter().all(|l| l.token != a.token));

    // A lease that keeps renewing outlives many TTLs.
    let c = s.client.acquire(&req("C", &["/kept"])).await.unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.client.renew(c.token, "C").await.unwrap();
    }
    assert_eq!(
        code(s.client.acquire(&req("D", &["/kept"])).await),
        ErrorCode::Busy
    );

    // Asking for more than the cap gets the cap.
    let mut long = req("E", &["/long"]);
    long.ttl_ms = Some(u64::MAX);
    let e = s.client.acquire(&long).await.unwrap();
    assert_eq!(e.ttl_ms, Config::default().max_ttl_ms);
    s.stop().await;
}

#[tokio::test]
async fn restart_keeps_leases_and_the_counter_only_grows() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path())).await;
    let a = s.client.acquire(&req("A", &["/a"])).await.unwrap();
    let b = s.client.acquire(&req("B", &["/b", "/c"])).await.unwrap();
    let gone = s.client.acquire(&req("G", &["/g"])).await.unwrap();
    s.client.release(gone.token, "G").await.unwrap();
    let before = shape(&s.client.list().await.unwrap());
    s.stop().await;

    let s = start(config(dir.path())).await;
    assert_eq!(shape(&s.client.list().await.unwrap()), before);
    assert_eq!(
        code(s.client.acquire(&req("X", &["/c"])).await),
        ErrorCode::Busy
    );
    s.client.renew(a.token, "A").await.unwrap();
    s.client.release(b.token, "B").await.unwrap();
    let g = s.client.acquire(&req("G", &["/g"])).await.unwrap();
    assert!(g.token > gone.token && g.token >= before.1);
    s.stop().await;

    // And again: the counter never goes back.
    let s = start(config(dir.path())).await;
    let list = s.client.list().await.unwrap();
    assert!(list.next_token > g.token);
    let h = s.client.acquire(&req("H", &["/h"])).await.unwrap();
    assert!(h.token > g.token);
    s.stop().await;
}

#[tokio::test]
async fn restart_grace_lets_live_holders_renew_and_dead_ones_expire() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.ttl_ms = 300;
    cfg.lock_delay_ms = 100;
    cfg.restart_grace_ms = Some(3_000);
    let s = start(cfg.clone()).await;
    let live = s.client.acquire(&req("live", &["/live"])).await.unwrap();
    let dead = s.client.acquire(&req("dead", &["/dead"])).await.unwrap();
    s.stop().await;
    // Down for longer than the TTL: both saved deadlines pass while the server is down.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let s = start(cfg).await;
    let renewed = s.client.renew(live.token, "live").await.unwrap();
    assert_eq!(renewed.token, live.token);
    // The dead holder's lease got the grace too: still held right after the restart...
    assert_eq!(
        code(s.client.acquire(&req("other", &["/dead"])).await),
        ErrorCode::Busy
    );
    // ...and it frees itself once grace + lock-delay pass without renewals.
    let taken = acquire_eventually(
        &s.client,
        &req("other", &["/dead"]),
        Duration::from_secs(15),
    )
    .await;
    assert!(taken.token > dead.token && taken.token > live.token);
    s.stop().await;
}

/// A lease that ran out while the server was up (still inside its lock-delay when the
/// server went down) stays expired after a restart: the restart grace is for holders who
/// could not renew because the server was down, not for dead ones.
#[tokio::test]
async fn a_lease_expired_before_a_restart_is_not_revived_by_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.ttl_ms = 600;
    cfg.lock_delay_ms = 60_000;
    cfg.restart_grace_ms = Some(10_000);
    let s = start(cfg.clone()).await;
    let lapsed = s.client.acquire(&req("lapsed", &["/x"])).await.unwrap();
    let live = s.client.acquire(&req("live", &["/y"])).await.unwrap();
    // Past the TTL and past a sweep (at most 1 s apart), well inside the lock-delay; the
    // live holder keeps renewing.
    for _ in 0..13 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.client.renew(live.token, "live").await.unwrap();
    }
    assert_eq!(
        code(s.client.renew(lapsed.token, "lapsed").await),
        ErrorCode::LeaseExpired
    );
    s.stop().await;

    let s = start(cfg).await;
    assert_eq!(
        code(s.client.renew(lapsed.token, "lapsed").await),
        ErrorCode::LeaseExpired
    );
    assert!(s
        .client
        .list()
        .await
        .unwrap()
        .leases
        .iter()
        .all(|l| l.token != lapsed.token));
    // Its path stays held for the rest of the lock-delay, as it would have without a restart.
    assert_eq!(
        code(s.client.acquire(&req("other", &["/x"])).await),
        ErrorCode::Busy
    );
    // The live holder still gets the grace.
    s.client.renew(live.token, "live").await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn tokens_strictly_increase_under_concurrent_clients() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path())).await;
    let mut tasks = Vec::new();
    for c in 0..4 {
        let client = LockClient::new(&s.url);
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            for i in 0..15 {
                let name = format!("c{c}");
                // All clients fight over /shared; each also has its own path.
                let path = if i % 3 == 0 {
                    "/shared".to_owned()
                } else {
                    format!("/own{c}")
                };
                match client.acquire(&req(&name, &[&path])).await {
                    Ok(lease) => {
                        tokens.push(lease.token);
                        client.release(lease.token, &name).await.unwrap();
                    }
                    Err(err) => assert_eq!(err.code, ErrorCode::Busy),
                }
            }
            tokens
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let tokens = task.await.unwrap();
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
        all.extend(tokens);
    }
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a token was given twice");
    let max = *unique.iter().max().unwrap();
    s.stop().await;
    let s = start(config(dir.path())).await;
    assert!(
        s.client
            .acquire(&req("after", &["/z"]))
            .await
            .unwrap()
            .token
            > max
    );
    s.stop().await;
}

/// Sends one raw request and checks the answer is a 4xx JSON `ApiError`.
async fn expect_4xx(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Vec<u8>>,
    json: bool,
) -> ErrorCode {
    let mut request = http.request(method.clone(), url);
    if json {
        request = request.header("content-type", "application/json");
    }
    if let Some(body) = body.clone() {
        request = request.body(body);
    }
    let reply = request.send().await.unwrap();
    let status = reply.status().as_u16();
    let text = reply.text().await.unwrap();
    let shown: String = body
        .map(|b| String::from_utf8_lossy(&b).chars().take(80).collect())
        .unwrap_or_default();
    assert!(
        (400..500).contains(&status),
        "{method} {url} {shown:?} -> {status} {text}"
    );
    let err: ApiError = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {url} {shown:?} -> non-JSON {text:?}: {e}"));
    assert_eq!(err.code.http_status(), status);
    err.code
}

/// Sends `line` (method and target, unnormalised) with a JSON body; returns status and body.
async fn raw_request(base: &str, line: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{line} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {reply:?}"));
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn bad_input_gets_4xx_json_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path())).await;
    let held = s.client.acquire(&req("owner", &["/held"])).await.unwrap();
    let before = shape(&s.client.list().await.unwrap());
    let http = dfs_proto::client::http_client();
    let long_name = "n".repeat(300);
    let long_path = format!("/{}", ["d"; 2100].join("/"));
    let many: Vec<String> = (0..300).map(|i| format!("\"/m{i}\"")).collect();
    let acquire_bodies: Vec<String> = vec![
        "".into(),
        "not json".into(),
        "{".into(),
        "[]".into(),
        "null".into(),
        "42".into(),
        "\"/held\"".into(),
        r#"{"paths":"/held","client":"x"}"#.into(),
        r#"{"paths":[1],"client":"x"}"#.into(),
        r#"{"paths":[null],"client":"x"}"#.into(),
        r#"{"paths":["/held"],"client":5}"#.into(),
        r#"{"paths":["/held"]}"#.into(),
        r#"{"client":"x"}"#.into(),
        r#"{"paths":["/new"],"client":"x","extra":true}"#.into(),
        r#"{"paths":["/a/../held"],"client":"x"}"#.into(),
        r#"{"paths":["/.."],"client":"x"}"#.into(),
        r#"{"paths":["/a/./b"],"client":"x"}"#.into(),
        r#"{"paths":[".."],"client":"x"}"#.into(),
        r#"{"paths":["a/b"],"client":"x"}"#.into(),
        r#"{"paths":["held"],"client":"x"}"#.into(),
        r#"{"paths":[""],"client":"x"}"#.into(),
        r#"{"paths":["//held"],"client":"x"}"#.into(),
        r#"{"paths":["/a\u0000b"],"client":"x"}"#.into(),
        r#"{"paths":["/a\nb"],"client":"x"}"#.into(),
        format!(r#"{{"paths":["/{long_name}"],"client":"x"}}"#),
        format!(r#"{{"paths":["{long_path}"],"client":"x"}}"#),
        r#"{"paths":["/new"],"client":"x","ttl_ms":-1}"#.into(),
        r#"{"paths":["/new"],"client":"x","ttl_ms":"10"}"#.into(),
        r#"{"paths":["/new"],"client":"x","ttl_ms":1.5}"#.into(),
        r#"{"paths":["/new"],"client":"x","ttl_ms":0}"#.into(),
        r#"{"paths":["/new"],"client":"x","ttl_ms":1e30}"#.into(),
        r#"{"paths":["/new"],"client":"x","ttl_ms":18446744073709551616}"#.into(),
        r#"{"paths":[],"client":"x"}"#.into(),
        r#"{"paths":["/new","/new"],"client":"x"}"#.into(),
        r#"{"paths":["/new","/new/"],"client":"x"}"#.into(),
        r#"{"paths":["/new"],"client":""}"#.into(),
        r#"{"paths":["/new"],"client":"x\u0001"}"#.into(),
        format!(r#"{{"paths":["/new"],"client":"{}"}}"#, "c".repeat(1000)),
        format!(r#"{{"paths":[{}],"client":"x"}}"#, many.join(",")),
    ];
    let url = |route: &str| format!("{}{route}", s.url);
    for body in &acquire_bodies {
        expect_4xx(
            &http,
            reqwest::Method::POST,
            &url("/v1/locks/acquire"),
            Some(body.clone().into_bytes()),
            true,
        )
        .await;
    }
    // Not UTF-8, and a valid body without a JSON content type.
    let mut raw = br#"{"paths":["/new"],"client":"x"#.to_vec();
    raw.extend([0xff, 0xfe, b'"', b'}']);
    expect_4xx(
        &http,
        reqwest::Method::POST,
        &url("/v1/locks/acquire"),
        Some(raw),
        true,
    )
    .await;
    let ok_body = br#"{"paths":["/new"],"client":"x"}"#.to_vec();
    expect_4xx(
        &http,
        reqwest::Method::POST,
        &url("/v1/locks/acquire"),
        Some(ok_body),
        false,
    )
    .await;

    let token = held.token;
    let lease_bodies: Vec<String> = vec![
        "".into(),
        "{".into(),
        "[]".into(),
        format!(r#"{{"token":"{token}","client":"owner"}}"#),
        r#"{"token":-1,"client":"owner"}"#.into(),
        r#"{"token":1.5,"client":"owner"}"#.into(),
        r#"{"token":18446744073709551616,"client":"owner"}"#.into(),
        format!(r#"{{"token":{token}}}"#),
        r#"{"client":"owner"}"#.into(),
        format!(r#"{{"token":{token},"client":"owner","paths":["/held"]}}"#),
        format!(r#"{{"token":{token},"client":""}}"#),
        format!(r#"{{"token":{token},"client":"owner\u0000"}}"#),
        format!(r#"{{"token":{token},"client":"intruder"}}"#),
        format!(r#"{{"token":{token},"client":"OWNER"}}"#),
        r#"{"token":999999,"client":"owner"}"#.into(),
        r#"{"token":0,"client":"owner"}"#.into(),
    ];
    // Renew goes first: a renew that wrongly succeeded would show as a changed list below.
    for route in ["/v1/locks/renew", "/v1/locks/release"] {
        for body in &lease_bodies {
            expect_4xx(
                &http,
                reqwest::Method::POST,
                &url(route),
                Some(body.clone().into_bytes()),
                true,
            )
            .await;
        }
    }

    // Huge bodies on every POST endpoint.
    let huge = format!(r#"{{"paths":["/{}"],"client":"x"}}"#, "a/".repeat(1 << 20));
    for route in ["/v1/locks/acquire", "/v1/locks/renew", "/v1/locks/release"] {
        let code = expect_4xx(
            &http,
            reqwest::Method::POST,
            &url(route),
            Some(huge.clone().into_bytes()),
            true,
        )
        .await;
        assert_eq!(code, ErrorCode::PayloadTooLarge, "{route}");
    }

    // Traversal and junk in the URL, and wrong methods.
    use reqwest::Method;
    let routes = [
        (Method::POST, "/v1/locks/%2e%2e/locks/acquire"),
        (Method::POST, "/v1/locks/%2e%2e"),
        (Method::POST, "/v1/locks/acquire%00"),
        (Method::POST, "/v1/locks/acquire/extra"),
        (Method::GET, "/v1/locks/acquire"),
        (Method::GET, "/v1/locks/renew"),
        (Method::GET, "/v1/locks/release"),
        (Method::POST, "/v1/locks"),
        (Method::DELETE, "/v1/locks"),
        (Method::POST, "/healthz"),
        (Method::GET, "/nope"),
    ];
    for (method, route) in routes {
        expect_4xx(
            &http,
            method,
            &url(route),
            Some(br#"{"paths":["/held"],"client":"x"}"#.to_vec()),
            true,
        )
        .await;
    }

    // reqwest normalises `%2e%2e` away, so send these over a raw socket.
    for line in [
        "GET /v1/%2e%2e/v1/locks",
        "POST /v1/locks/%2e%2e/v1/locks/acquire",
        "GET /v1/locks/%2E%2E/%2E%2E/healthz",
        "GET /v1/../v1/locks",
        "POST /v1/locks/acquire/..",
    ] {
        let (status, text) = raw_request(&s.url, line, r#"{"paths":["/held"],"client":"x"}"#).await;
        assert!((400..500).contains(&status), "{line} -> {status} {text}");
        let err: ApiError =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{line}: {text:?}: {e}"));
        assert_eq!(err.code.http_status(), status);
    }

    assert_eq!(
        shape(&s.client.list().await.unwrap()),
        before,
        "bad input changed the table"
    );
    // The owner still holds the lease it had.
    assert_eq!(
        s.client.renew(held.token, "owner").await.unwrap().token,
        held.token
    );

    // `%2e%2e` inside a body is a literal file name, not traversal: it locks only itself.
    let odd = s
        .client
        .acquire(&req("x", &["/held/%2e%2e"]))
        .await
        .unwrap();
    assert_eq!(odd.paths, vec![p("/held/%2e%2e")]);
    assert_eq!(
        code(s.client.acquire(&req("y", &["/held"])).await),
        ErrorCode::Busy
    );
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Power loss: the lease table on a simulated disk. Leases live in memory, so a crash loses
// them all; what must hold is that the counter never goes back, that no new lease is granted
// while a lease of the crashed run may be live, and that every live holder gets its lease back.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Step {
    Acquire(&'static str, &'static [&'static str]),
    Renew(&'static str),
    Release(&'static str),
}

/// Names a lease by the client that holds it in the script.
const SCRIPT: &[Step] = &[
    Step::Acquire("A", &["/a"]),
    Step::Acquire("B", &["/b", "/c"]),
    Step::Renew("A"),
    Step::Acquire("A", &["/a"]),
    Step::Release("B"),
    Step::Acquire("C", &["/b"]),
    Step::Release("A"),
    Step::Acquire("A", &["/a", "/d"]),
    Step::Renew("C"),
    Step::Acquire("D", &["/e"]),
];

/// The recovery after a crash lasts TTL + lock-delay: short, so the tests can wait it out.
fn crash_config() -> Config {
    Config {
        ttl_ms: 1_500,
        lock_delay_ms: 100,
        insecure: true,
        ..Config::default()
    }
}

/// Live leases by token, each as its holder last received it.
type Model = BTreeMap<u64, Lease>;

fn open_table(disk: &CrashDisk, config: &Config) -> LockTable {
    LockTable::open(Store::with_backend(disk.backend()).unwrap(), config).unwrap()
}

/// Runs `step`; returns the token it used. `released` collects the leases given back.
fn run_step(
    table: &mut LockTable,
    model: &mut Model,
    released: &mut Vec<Lease>,
    step: &Step,
) -> Result<u64, ApiError> {
    let lease_of = |model: &Model, client: &str| {
        model
            .values()
            .find(|l| l.client == client)
            .cloned()
            .expect("the script names a held lease")
    };
    match step {
        Step::Acquire(client, paths) => {
            let lease = table.acquire(&req(client, paths), "")?;
            model.insert(lease.token, lease.clone());
            Ok(lease.token)
        }
        Step::Renew(client) => {
            let held = lease_of(model, client);
            let lease = table.renew(held.token, client, "", None)?;
            model.insert(lease.token, lease.clone());
            Ok(lease.token)
        }
        Step::Release(client) => {
            let held = lease_of(model, client);
            table.release(held.token, client, "")?;
            model.remove(&held.token);
            released.push(held.clone());
            Ok(held.token)
        }
    }
}

fn recovering(table: &LockTable) -> bool {
    table.list(None, usize::MAX).recovering_ms.is_some()
}

/// Power lost after each prefix of the script: the restarted table knows no lease and grants
/// none, takes back exactly the live ones from their holders (a released lease's old copy
/// is refused wherever a newer lease took its path), and hands out only higher tokens.
#[test]
fn power_loss_after_any_step_loses_no_live_lease_and_no_token() {
    let config = crash_config();
    for steps in 0..=SCRIPT.len() {
        let disk = CrashDisk::new();
        let mut table = open_table(&disk, &config);
        let (mut model, mut released) = (Model::new(), Vec::new());
        let mut max_token = 0;
        for step in &SCRIPT[..steps] {
            let token = run_step(&mut table, &mut model, &mut released, step)
                .unwrap_or_else(|e| panic!("step {step:?}: {e}"));
            max_token = max_token.max(token);
        }
        disk.crash();
        drop(table);

        let mut table = open_table(&disk, &config);
        assert!(recovering(&table), "after {steps} steps: not recovering");
        assert!(table.list(None, usize::MAX).leases.is_empty());
        // No new lease while the crashed run's leases may be live, on their paths or others.
        for paths in [&["/a"][..], &["/new"]] {
            let refused = table.acquire(&req("Z", paths), "").unwrap_err();
            assert_eq!(refused.code, ErrorCode::Unavailable, "after {steps} steps");
        }
        // Old copies of released leases first: where a live lease now has the path, the
        // live one takes it back over them.
        for old in &released {
            let _ = table.renew(old.token, &old.client, "", Some(old));
        }
        for lease in model.values() {
            let back = table
                .renew(lease.token, &lease.client, "", Some(lease))
                .unwrap_or_else(|e| panic!("after {steps} steps, {lease:?}: {e}"));
            assert_eq!((back.token, &back.paths), (lease.token, &lease.paths));
        }
        // And a released copy presented after them is refused wherever its path is held.
        for old in &released {
            let held = old
                .paths
                .iter()
                .any(|p| model.values().any(|l| l.paths.contains(p)));
            if held {
                let refused = table.renew(old.token, &old.client, "", Some(old));
                assert_eq!(
                    refused.unwrap_err().code,
                    ErrorCode::LeaseExpired,
                    "after {steps} steps, a released lease came back over a live one"
                );
            }
        }
        let listed: BTreeSet<u64> = table
            .list(None, usize::MAX)
            .leases
            .iter()
            .map(|l| l.token)
            .collect();
        assert!(model.keys().all(|t| listed.contains(t)));
        // A renewal that is not a holder's copy brings nothing back.
        let forged = Lease {
            token: max_token + 5000,
            ..req_lease("F", "/f")
        };
        assert_eq!(
            table
                .renew(forged.token, "F", "", Some(&forged))
                .unwrap_err()
                .code,
            ErrorCode::LeaseExpired
        );
        drop(table);

        // Power lost again during the recovery: the counter still never goes back.
        disk.crash();
        let mut table = open_table(&disk, &config);
        wait_out_recovery(&mut table);
        let fresh = table.acquire(&req("Z", &["/z"]), "").unwrap();
        assert!(
            fresh.token > max_token,
            "after {steps} steps: token {} not above {max_token}",
            fresh.token
        );
    }
}

fn req_lease(client: &str, path: &str) -> Lease {
    Lease {
        token: 1,
        client: client.into(),
        paths: vec![p(path)],
        ttl_ms: 1000,
        expires_in_ms: 1000,
        holder: String::new(),
        expires_unix_ms: u64::MAX,
        signature: None,
    }
}

fn wait_out_recovery(table: &mut LockTable) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while recovering(table) {
        assert!(Instant::now() < deadline, "the recovery never ended");
        std::thread::sleep(Duration::from_millis(20));
        table.sweep().unwrap();
    }
}

/// Tokens come from blocks reserved on disk: a power loss at any write while blocks are
/// reserved never lets a token repeat, and a reservation that did not reach the disk fails
/// the grant that needed it instead of handing out an unreserved token.
#[test]
fn power_loss_at_every_reservation_never_repeats_a_token() {
    let config = crash_config();
    let grants = lockserver::table::TOKEN_BLOCK * 2 + 10;
    let mut k = 0;
    loop {
        let disk = CrashDisk::new();
        let mut table = open_table(&disk, &config);
        disk.crash_after_ops(k);
        let mut max_acked = 0;
        let mut failed = false;
        for i in 0..grants {
            match table.acquire(&req("A", &["/a"]), "") {
                Ok(lease) => {
                    max_acked = lease.token;
                    table.release(lease.token, "A", "").unwrap();
                }
                Err(err) => {
                    assert_eq!(err.code, ErrorCode::Internal, "grant {i}: {err}");
                    failed = true;
                    break;
                }
            }
        }
        disk.crash();
        drop(table);
        let mut table = open_table(&disk, &config);
        wait_out_recovery(&mut table);
        let fresh = table.acquire(&req("Z", &["/z"]), "").unwrap();
        assert!(
            fresh.token > max_acked,
            "crash at op {k}: token {} after {max_acked}",
            fresh.token
        );
        if !failed {
            assert!(k > 2, "reserving two more blocks should take writes: {k}");
            return;
        }
        k += 1;
    }
}

#[test]
fn power_loss_while_the_store_is_created() {
    for k in 0..64 {
        let disk = CrashDisk::new();
        disk.crash_after_ops(k);
        let opened = Store::with_backend(disk.backend());
        let done = opened.is_ok() && !disk.crashed_or_unarmed();
        drop(opened);
        disk.crash();
        let store = match Store::with_backend(disk.backend()) {
            Ok(store) => store,
            // redb refuses an image whose creation never finished. `Store::open` never meets
            // one: it creates under a temp name and renames only a finished store into place.
            Err(_) if !done => continue,
            Err(e) => panic!("crash at op {k}, after creation finished: {e}"),
        };
        let snap = store.load().unwrap();
        assert!(snap.leases.is_empty());
        assert_eq!(snap.next_token, lockserver::store::FIRST_TOKEN);
        if done {
            return;
        }
    }
    panic!("store creation takes more than 64 writes");
}

/// After a crash a lease that had already run out is not taken back, a live one is; a lease
/// granted with a longer TTL than the default makes the recovery last that long.
#[test]
fn a_dead_lease_is_not_taken_back_after_a_crash_and_long_leases_lengthen_the_recovery() {
    let disk = CrashDisk::new();
    let config = Config {
        ttl_ms: 30,
        lock_delay_ms: 20,
        insecure: true,
        ..Config::default()
    };
    let mut table = open_table(&disk, &config);
    let dead = table.acquire(&req("dead", &["/s"]), "").unwrap();
    let live = table
        .acquire(
            &AcquireRequest {
                ttl_ms: Some(60_000),
                ..req("live", &["/l"])
            },
            "",
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    disk.crash();
    drop(table);
    let mut table = open_table(&disk, &config);
    let left = table.list(None, usize::MAX).recovering_ms.unwrap();
    assert!(
        left > 59_000,
        "recovery of {left} ms, shorter than the 60 s lease"
    );
    assert_eq!(
        table
            .renew(dead.token, "dead", "", Some(&dead))
            .unwrap_err()
            .code,
        ErrorCode::LeaseExpired
    );
    let back = table.renew(live.token, "live", "", Some(&live)).unwrap();
    assert_eq!(back.token, live.token);
    assert_eq!(back.ttl_ms, 60_000);
}

/// A clean stop saves the leases: the next start knows them at once and grants new leases
/// on other paths without a recovery period.
#[test]
fn a_clean_stop_needs_no_recovery() {
    let disk = CrashDisk::new();
    let config = crash_config();
    let mut table = open_table(&disk, &config);
    let a = table.acquire(&req("A", &["/a"]), "").unwrap();
    table.close();
    drop(table);
    disk.crash();
    let mut table = open_table(&disk, &config);
    assert!(!recovering(&table));
    assert_eq!(table.renew(a.token, "A", "", None).unwrap().token, a.token);
    assert_eq!(
        table.acquire(&req("B", &["/a"]), "").unwrap_err().code,
        ErrorCode::Busy
    );
    let b = table.acquire(&req("B", &["/b"]), "").unwrap();
    assert!(b.token > a.token);
}

/// A kill while the machine stays up (the table dropped without its clean stop; the journal's
/// writes are in the page cache): the restart has every lease back as it was, with no
/// recovery; a lease that had run out before the kill stays expired; the counter goes on.
#[test]
fn a_kill_in_the_same_boot_replays_the_journal_without_a_recovery() {
    if lockserver::journal::boot_id().is_none() {
        eprintln!("no boot id on this kernel: the journal is never trusted, nothing to test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(lockserver::STORE_FILE);
    let config = Config {
        ttl_ms: 60_000,
        lock_delay_ms: 60_000,
        insecure: true,
        ..Config::default()
    };
    let open = || {
        LockTable::open_with_journal(Store::open(&file).unwrap(), &config, Some(dir.path()))
            .unwrap()
    };
    let mut table = open();
    let a = table.acquire(&req("A", &["/a"]), "").unwrap();
    let b = table.acquire(&req("B", &["/b"]), "").unwrap();
    let short = table
        .acquire(
            &AcquireRequest {
                ttl_ms: Some(20),
                ..req("S", &["/s"])
            },
            "",
        )
        .unwrap();
    table.release(b.token, "B", "").unwrap();
    table.renew(a.token, "A", "", None).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Something journaled after the short lease ran out, as a running server would.
    let c = table.acquire(&req("C", &["/c"]), "").unwrap();
    drop(table);

    let mut table = open();
    assert!(!recovering(&table));
    let live: BTreeSet<u64> = table
        .list(None, usize::MAX)
        .leases
        .iter()
        .map(|l| l.token)
        .collect();
    assert_eq!(live, BTreeSet::from([a.token, c.token]));
    assert_eq!(table.renew(a.token, "A", "", None).unwrap().token, a.token);
    assert_eq!(
        table.renew(short.token, "S", "", None).unwrap_err().code,
        ErrorCode::LeaseExpired
    );
    // Its path stays blocked for the rest of its lock-delay, as without the kill.
    assert_eq!(
        table.acquire(&req("X", &["/s"]), "").unwrap_err().code,
        ErrorCode::Busy
    );
    let fresh = table.acquire(&req("B2", &["/b"]), "").unwrap();
    assert!(fresh.token > c.token);
    drop(table);

    // Without its journal (what a reboot leaves), the same store recovers instead.
    std::fs::remove_file(dir.path().join(lockserver::journal::JOURNAL_FILE)).unwrap();
    let table = open();
    assert!(recovering(&table));
}
