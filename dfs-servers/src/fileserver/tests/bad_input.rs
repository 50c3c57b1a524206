//! A corpus of malformed requests: every one gets a 4xx JSON error and changes nothing.

use super::{client, TestServer};
use dfs_proto::{Checksum, CHECKSUM_HEADER};
use reqwest::Method;

/// method, URL, headers, body
type Case = (Method, String, Vec<(&'static str, String)>, Vec<u8>);

#[tokio::test]
async fn bad_requests_get_4xx_json_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fs = TestServer::start(dir.path(), |_| {}).await;
    let c = client();
    c.upload_bytes(&fs.url, 1, 1, b"keep".to_vec())
        .await
        .unwrap();
    let before = c.list(&fs.url).await.unwrap().blobs;

    let http = dfs_proto::client::http_client();
    let sum = Checksum::of(b"x").to_string();
    let bad_ids = [
        "-1",
        "abc",
        "%2e%2e",
        "..%2f..%2fetc",
        "99999999999999999999999",
        "18446744073709551616",
        "1%00",
        "+1",
        "0x1",
        "1.5",
        "%20",
        "%ff",
    ];
    let mut cases: Vec<Case> = Vec::new();
    for bad in bad_ids {
        for (a, b) in [(bad, "1"), ("1", bad)] {
            let url = format!("{}/v1/blobs/{a}/{b}", fs.url);
            cases.push((Method::GET, url.clone(), vec![], vec![]));
            cases.push((Method::HEAD, url.clone(), vec![], vec![]));
            cases.push((Method::DELETE, url.clone(), vec![], vec![]));
            cases.push((
                Method::PUT,
                url.clone(),
                vec![(CHECKSUM_HEADER, sum.clone())],
                b"x".to_vec(),
            ));
            cases.push((
                Method::POST,
                format!("{url}/fetch"),
                vec![("content-type", "application/json".into())],
                br#"{"source":"http://127.0.0.1:1","checksum":"00000000"}"#.to_vec(),
            ));
        }
    }
    let blob = format!("{}/v1/blobs/2/2", fs.url);
    let json = || ("content-type", "application/json".to_owned());
    // Upload header problems (a missing checksum is fine: the server computes it).
    for h in [
        "",
        "zz",
        "123",
        "0000000g",
        "+0000000",
        "000000000",
        " 00000000",
    ] {
        cases.push((
            Method::PUT,
            blob.clone(),
            vec![(CHECKSUM_HEADER, h.to_owned())],
            b"x".to_vec(),
        ));
    }
    // Fetch bodies.
    let fetch = format!("{blob}/fetch");
    for body in [
        "",
        "{",
        "null",
        "[]",
        r#"{"source":"http://127.0.0.1:1"}"#,
        r#"{"source":1,"checksum":"00000000"}"#,
        r#"{"source":"http://127.0.0.1:1","checksum":"xyz"}"#,
        r#"{"source":"http://127.0.0.1:1","checksum":"00000000","extra":1}"#,
        r#"{"source":"file:///etc/passwd","checksum":"00000000"}"#,
        r#"{"source":"not a url","checksum":"00000000"}"#,
        r#"{"source":"../../etc","checksum":"00000000"}"#,
    ] {
        cases.push((
            Method::POST,
            fetch.clone(),
            vec![json()],
            body.as_bytes().to_vec(),
        ));
    }
    cases.push((
        Method::POST,
        fetch.clone(),
        vec![],
        br#"{"source":"http://a","checksum":"00000000"}"#.to_vec(),
    ));
    let huge = format!(
        r#"{{"source":"http://a/{}","checksum":"00000000"}}"#,
        "a".repeat(4 << 20)
    );
    cases.push((Method::POST, fetch.clone(), vec![json()], huge.into_bytes()));
    // Unknown routes and wrong methods.
    for (m, path) in [
        (Method::GET, "/v1/blobs/1"),
        (Method::GET, "/v1/blobs/1/1/2"),
        (Method::GET, "/v1/blobs/../../etc/passwd"),
        (Method::GET, "/v1/blobs/%2e%2e/%2e%2e/etc"),
        (Method::POST, "/v1/blobs/1/1"),
        (Method::DELETE, "/v1/blobs"),
        (Method::PUT, "/v1/stats"),
        (Method::GET, "/nope"),
    ] {
        cases.push((m, format!("{}{path}", fs.url), vec![], vec![]));
    }

    for (method, url, headers, body) in cases {
        let mut req = http.request(method.clone(), &url);
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        let reply = req.body(body).send().await.unwrap();
        let status = reply.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "{method} {url} {headers:?}: {status}"
        );
        if method != Method::HEAD {
            let text = reply.text().await.unwrap();
            let err: dfs_proto::ApiError = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{method} {url}: not a JSON error ({e}): {text}"));
            assert!(!err.message.is_empty());
        }
    }
    assert_eq!(c.list(&fs.url).await.unwrap().blobs, before);
    assert!(fs.temp_files().is_empty());
    fs.stop().await;
}
