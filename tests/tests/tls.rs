//! A cluster over https (item 7 of issue 12): every server with a certificate from a local
//! CA; a client that trusts that CA writes and reads; a plain-HTTP client is told to use
//! https; a client without the CA fails with a certificate error that says what to do; a
//! client that connects and never speaks does not hold up anyone else.

use dfs_proto::client::{LockClient, NameClient};
use dfs_proto::ErrorCode;
use dfs_tests::cluster::Cluster;
use std::time::{Duration, Instant};

#[test]
fn a_client_with_the_ca_writes_and_reads_over_https() {
    let cluster = Cluster::start_tls(2);
    assert!(cluster.nameserver.starts_with("https://"));
    let ca = cluster.ca.clone().expect("a TLS cluster has a CA");

    // The fileservers registered https URLs, so clients and the nameserver reach them so.
    let info = cluster.block_on(cluster.names().cluster()).unwrap();
    assert_eq!(info.fileservers.len(), 2, "{info:?}");
    for server in &info.fileservers {
        assert!(server.url.starts_with("https://"), "{server:?}");
        assert!(server.alive, "{server:?}");
    }
    assert!(info
        .lockserver
        .as_deref()
        .is_some_and(|url| url.starts_with("https://")));

    let client = dfs_client::Client::builder(&cluster.nameserver)
        .ca(&ca)
        .unwrap()
        .key(cluster.keys.client.clone())
        .build();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    cluster.block_on(async {
        client.create_dir("/secure").await.unwrap();
        client.write("/secure/a.bin", &content).await.unwrap();
        assert_eq!(client.read("/secure/a.bin").await.unwrap(), content);
        let meta = client.metadata("/secure/a.bin").await.unwrap();
        assert_eq!(meta.len(), content.len() as u64);
    });

    // Both copies landed (the publish needs the replication factor, 2), over https.
    let entry = cluster
        .block_on(cluster.names().stat(&"/secure/a.bin".parse().unwrap()))
        .unwrap();
    assert_eq!(entry.servers.len(), 2, "{entry:?}");
}

#[test]
fn plain_http_to_a_tls_server_is_told_to_use_https() {
    let cluster = Cluster::start_tls(1);
    let plain = |url: &str| url.replacen("https://", "http://", 1);

    let names = NameClient::new(&plain(&cluster.nameserver));
    let err = cluster.block_on(names.cluster()).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest, "{err}");
    assert!(err.message.contains("https://"), "{err}");

    let locks = LockClient::new(&plain(&cluster.lockserver));
    let err = cluster.block_on(locks.list()).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest, "{err}");

    let http = dfs_proto::client::http_client();
    let reply = cluster
        .block_on(
            http.get(format!("{}/v1/healthz", plain(&cluster.fileservers[0])))
                .send(),
        )
        .unwrap();
    assert_eq!(reply.status().as_u16(), 400);

    // And nothing was served in the clear: the same request over https works.
    cluster.block_on(cluster.names().cluster()).unwrap();
}

#[test]
fn a_client_without_the_ca_gets_a_certificate_error() {
    let cluster = Cluster::start_tls(1);
    let client = dfs_client::Client::new(&cluster.nameserver);
    let err = cluster.block_on(client.metadata("/")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("certificate"), "{text}");
    assert!(
        text.contains("--ca"),
        "the error says how to fix it: {text}"
    );

    // The typed client says the same, with a code that is not the server's fault.
    let names = NameClient::new(&cluster.nameserver);
    let err = cluster.block_on(names.cluster()).unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert!(
        err.message.contains(dfs_proto::error::CERTIFICATE_HINT),
        "{err}"
    );

    // A CA of another cluster does not help either.
    let other = tempfile::tempdir().unwrap();
    let other_ca = dfs_servers::common::certs::LocalCerts::ensure(other.path())
        .unwrap()
        .ca;
    let client = dfs_client::Client::with_ca(&cluster.nameserver, &other_ca).unwrap();
    let err = cluster.block_on(client.metadata("/")).unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[test]
fn a_silent_connection_does_not_stall_the_others() {
    let cluster = Cluster::start_tls(1);
    let addr = cluster.nameserver.trim_start_matches("https://").to_owned();
    // Connections that never send a byte: their handshakes wait in their own tasks.
    let _silent: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let names = cluster.names();
    let started = Instant::now();
    cluster.block_on(names.cluster()).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a request behind silent connections took {:?}",
        started.elapsed()
    );
}
