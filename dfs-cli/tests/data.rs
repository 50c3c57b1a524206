//! The data and admin subcommands (`put`, `get`, `cat`, `ls`, `stat`, `mkdir`, `rm`, `mv`,
//! `locks`, `fileservers`, `map`, `status`, `completions`) run as the built `dfs` binary
//! against a real in-process cluster: round trips, JSON output, errors and exit codes, and
//! interrupted or failing puts that must never leave a partial file visible.

use dfs_tests::cluster::Cluster;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn dfs(cluster: &Cluster, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dfs"))
        .args(args)
        .env("DFS_NAMESERVER", &cluster.nameserver)
        .env("DFS_KEY", admin_key(cluster))
        .env_remove("RUST_LOG")
        .output()
        .expect("run dfs")
}

/// The CLI runs with an admin key: `map set` and `fileservers` need one.
fn admin_key(cluster: &Cluster) -> std::path::PathBuf {
    cluster.key_file("cli-admin", dfs_proto::auth::Role::Admin)
}

fn ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = dfs(cluster, args);
    assert!(out.status.success(), "dfs {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Asserts exit `code` and one `dfs: ...` line on stderr; returns the line.
fn fails(cluster: &Cluster, args: &[&str], code: i32) -> String {
    let out = dfs(cluster, args);
    assert_eq!(out.status.code(), Some(code), "dfs {args:?}: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(err.starts_with("dfs: "), "{err:?}");
    err
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn put_get_cat_round_trip() {
    let cluster = Cluster::start(3);
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.bin");
    let content = bytes(3 << 20, 7);
    std::fs::write(&big, &content).unwrap();
    let small = tmp.path().join("small.txt");
    std::fs::write(&small, b"hello dfs\n").unwrap();

    ok(&cluster, &["mkdir", "/docs"]);
    ok(&cluster, &["put", s(&big), "/docs/big.bin"]);
    ok(&cluster, &["put", s(&small), "/docs"]); // into the directory
    let out = tmp.path().join("out.bin");
    ok(&cluster, &["get", "/docs/big.bin", s(&out)]);
    assert!(std::fs::read(&out).unwrap() == content, "bytes differ");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "the remote file's mode");
    assert_eq!(ok(&cluster, &["cat", "/docs/small.txt"]), "hello dfs\n");

    // Get into a directory; no temporary file is left next to the target.
    let dir = tmp.path().join("into");
    std::fs::create_dir(&dir).unwrap();
    ok(
        &cluster,
        &["get", "/docs/small.txt", "/docs/big.bin", s(&dir)],
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["big.bin", "small.txt"]);

    // Overwrite publishes a new version.
    std::fs::write(&small, b"second\n").unwrap();
    ok(&cluster, &["put", s(&small), "/docs/small.txt"]);
    assert_eq!(ok(&cluster, &["cat", "/docs/small.txt"]), "second\n");

    // stdin.
    let mut child = Command::new(env!("CARGO_BIN_EXE_dfs"))
        .args(["put", "-", "/docs/stdin.txt"])
        .env("DFS_NAMESERVER", &cluster.nameserver)
        .env("DFS_KEY", admin_key(&cluster))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(ok(&cluster, &["cat", "/docs/stdin.txt"]), "piped\n");
}

#[test]
fn recursive_trees_ls_stat_json() {
    let cluster = Cluster::start(2);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::write(src.join("top.txt"), b"top").unwrap();
    std::fs::write(src.join("a/one.bin"), bytes(100_000, 1)).unwrap();
    std::fs::write(src.join("a/b/two.bin"), bytes(2 << 20, 2)).unwrap();

    let err = fails(&cluster, &["put", s(&src), "/t"], 1);
    assert!(err.contains("use -r"), "{err}");
    ok(&cluster, &["put", "-r", s(&src), "/t"]);

    let listing: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["ls", "-R", "--json", "/t"])).unwrap();
    let mut paths: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/t/a",
            "/t/a/b",
            "/t/a/b/two.bin",
            "/t/a/one.bin",
            "/t/empty",
            "/t/top.txt"
        ]
    );
    let plain = ok(&cluster, &["ls", "/t"]);
    assert_eq!(plain, "a\nempty\ntop.txt\n");
    let long = ok(&cluster, &["ls", "-l", "/t"]);
    assert!(
        long.lines()
            .any(|l| l.starts_with("drwx") && l.ends_with(" a")),
        "{long}"
    );
    assert!(
        long.lines()
            .any(|l| l.starts_with("-rw-") && l.contains(" 3 ")),
        "{long}"
    );

    let stat: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["stat", "--json", "/t/a/b/two.bin"])).unwrap();
    assert_eq!(stat["size"], 2 << 20);
    assert_eq!(stat["kind"], "file");
    assert_eq!(stat["servers"].as_array().unwrap().len(), 2);
    assert!(ok(&cluster, &["stat", "/t/a"]).contains("kind: directory"));

    let back = tmp.path().join("back");
    ok(&cluster, &["get", "-r", "/t", s(&back)]);
    for rel in ["top.txt", "a/one.bin", "a/b/two.bin"] {
        assert!(
            std::fs::read(src.join(rel)).unwrap() == std::fs::read(back.join(rel)).unwrap(),
            "{rel} differs"
        );
    }
    assert!(back.join("empty").is_dir());
}

#[test]
fn mkdir_rm_mv() {
    let cluster = Cluster::start(2);
    fails(&cluster, &["mkdir", "/x/y"], 1);
    ok(&cluster, &["mkdir", "-p", "/x/y/z"]);
    ok(&cluster, &["mkdir", "-p", "/x/y/z"]);
    let err = fails(&cluster, &["mkdir", "/x"], 1);
    assert!(err.starts_with("dfs: /x: "), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    std::fs::write(&f, b"f").unwrap();
    ok(&cluster, &["put", s(&f), "/x/y/z/f"]);
    ok(&cluster, &["mv", "/x/y/z/f", "/x/g"]);
    assert_eq!(ok(&cluster, &["cat", "/x/g"]), "f");
    ok(&cluster, &["mv", "/x/g", "/x/y"]); // into a directory
    assert_eq!(ok(&cluster, &["cat", "/x/y/g"]), "f");

    let err = fails(&cluster, &["rm", "/x"], 1);
    assert!(err.contains("use -r"), "{err}");
    ok(&cluster, &["rm", "/x/y/g"]);
    fails(&cluster, &["cat", "/x/y/g"], 1);
    fails(&cluster, &["rm", "-r", "/"], 2);
    ok(&cluster, &["rm", "-r", "/x"]);
    assert_eq!(ok(&cluster, &["ls", "/"]), "");
}

#[test]
fn bad_input_is_one_line_and_the_right_exit_code() {
    let cluster = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    std::fs::write(&f, b"data").unwrap();
    ok(&cluster, &["mkdir", "/d"]);

    // A missing local file: nothing is sent.
    let missing = tmp.path().join("missing");
    let err = fails(&cluster, &["put", s(&missing), "/d/m"], 1);
    assert!(err.contains("missing: no such file"), "{err}");
    fails(&cluster, &["stat", "/d/m"], 1);

    // A remote directory given as a file.
    let err = fails(&cluster, &["cat", "/d"], 1);
    assert!(
        err.starts_with("dfs: /d: ") && err.contains("directory"),
        "{err}"
    );
    let err = fails(&cluster, &["get", "/d", s(&tmp.path().join("x"))], 1);
    assert!(err.contains("use -r"), "{err}");

    // A path the DFS rules refuse: a control character, a relative path.
    let err = fails(&cluster, &["put", s(&f), "/d/bad\u{1}name"], 1);
    assert!(err.starts_with("dfs: /d/bad\\u{1}name: "), "{err}");
    assert!(err.contains("control character"), "{err}");
    assert_eq!(ok(&cluster, &["ls", "/d"]), "");
    fails(&cluster, &["ls", "relative"], 1);

    // Usage errors: several sources and a file target; unknown flags.
    let err = fails(&cluster, &["put", s(&f), s(&f), "/d/file"], 2);
    assert!(err.contains("not a directory"), "{err}");
    fails(&cluster, &["ls", "--bogus"], 2);
    fails(&cluster, &["put", s(&f)], 2);
}

#[test]
fn a_nameserver_that_is_down_fails_fast_with_exit_1() {
    // A port nobody listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    std::fs::write(&f, b"data").unwrap();
    for args in [
        vec!["ls", "/"],
        vec!["put", s(&f), "/f"],
        vec!["get", "/f", s(&f)],
        vec!["status"],
        vec!["locks"],
    ] {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_dfs"))
            .args(&args)
            .args(["--nameserver", &url])
            .output()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(15), "{args:?} hung");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("cannot reach"), "{err}");
    }
}

#[test]
fn ctrl_c_during_put_publishes_nothing() {
    let cluster = Cluster::start(2);
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let child = Command::new(env!("CARGO_BIN_EXE_dfs"))
        .args(["put", s(&fifo), "/slow"])
        .env("DFS_NAMESERVER", &cluster.nameserver)
        .env("DFS_KEY", admin_key(&cluster))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A slow source: some bytes, then nothing more until the interrupt.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    use std::io::Write;
    writer.write_all(&bytes(3 << 20, 3)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    drop(writer);
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    fails(&cluster, &["stat", "/slow"], 1);
    assert_eq!(ok(&cluster, &["ls", "/"]), "");
}

/// Registers a fileserver that is dead (nothing listens at its URL): alive to the
/// nameserver until its heartbeat times out, so puts are sent to it and uploads there fail.
fn dead_fileserver(cluster: &Cluster) {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cluster
        .block_on(
            cluster
                .server_names()
                .register(&dfs_proto::names::RegisterRequest {
                    id: "dead".into(),
                    url: format!("http://127.0.0.1:{dead}"),
                    capacity_bytes: 1 << 40,
                    free_bytes: 1 << 40,
                    dirs: Vec::new(),
                    secret: None,
                }),
        )
        .unwrap();
}

#[test]
fn a_dead_fileserver_during_put_never_leaves_a_partial_file() {
    let tmp = tempfile::tempdir().unwrap();
    // Two live fileservers and a dead one, replication 2: the client replaces the dead
    // target and every put completes. One live and a dead one: every put fails clearly.
    for (live, must_succeed) in [(2, true), (1, false)] {
        let cluster = Cluster::start_with(live, |c| c.replication = 2);
        dead_fileserver(&cluster);
        for i in 0..3 {
            let f = tmp.path().join(format!("f{i}"));
            let content = bytes(1 << 20, i as u8);
            std::fs::write(&f, &content).unwrap();
            let target = format!("/f{i}");
            let out = dfs(&cluster, &["put", s(&f), &target]);
            assert_eq!(out.status.success(), must_succeed, "{out:?}");
            if must_succeed {
                let back = tmp.path().join("back");
                ok(&cluster, &["get", &target, s(&back)]);
                assert!(std::fs::read(&back).unwrap() == content, "{target} differs");
            } else {
                assert_eq!(out.status.code(), Some(1), "{out:?}");
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(err.lines().count(), 1, "{err}");
                assert!(err.starts_with(&format!("dfs: {target}: ")), "{err}");
                assert!(!err.contains("kept"), "{err}");
                // Never a partial file, nor an empty name left by the open.
                fails(&cluster, &["stat", &target], 1);
            }
        }
        let v: serde_json::Value =
            serde_json::from_str(&ok(&cluster, &["fileservers", "--json"])).unwrap();
        assert_eq!(v.as_array().unwrap().len(), live + 1, "{v}");
    }
}

#[test]
fn admin_views_and_completions() {
    let cluster = Cluster::start(2);
    let status = ok(&cluster, &["status"]);
    assert!(status.contains("fileservers  2/2 alive"), "{status}");
    let v: serde_json::Value = serde_json::from_str(&ok(&cluster, &["status", "--json"])).unwrap();
    assert_eq!(v["fileservers_alive"], 2);
    assert_eq!(v["leases_held"], 0);

    let locks: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["locks", "--json"])).unwrap();
    assert!(locks["leases"].as_array().unwrap().is_empty());
    assert!(ok(&cluster, &["locks"]).contains("no leases held"));

    ok(&cluster, &["map", "set", "/photos", "--replication", "1"]);
    let map: serde_json::Value = serde_json::from_str(&ok(&cluster, &["map", "--json"])).unwrap();
    assert!(
        map.as_array()
            .unwrap()
            .iter()
            .any(|l| l["dir"] == "/photos" && l["replication"] == 1),
        "{map}"
    );
    assert!(ok(&cluster, &["map"]).contains("/photos"));
    fails(
        &cluster,
        &["map", "set", "/photos", "--replication", "lots"],
        2,
    );
    fails(
        &cluster,
        &["map", "set", "/photos", "--replication", "0"],
        1,
    );

    let table = ok(&cluster, &["fileservers"]);
    assert_eq!(table.lines().count(), 3, "{table}");

    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&cluster, &["completions", shell]);
        assert!(script.contains("put"), "{shell}");
    }
    fails(&cluster, &["completions", "tcsh"], 2);
}

#[test]
fn every_subcommand_has_an_example_in_its_help() {
    let cluster = Cluster::start(1);
    for sub in [
        "put",
        "get",
        "cat",
        "ls",
        "stat",
        "mkdir",
        "rm",
        "mv",
        "locks",
        "fileservers",
        "map",
        "status",
        "completions",
        "map set",
    ] {
        let mut args: Vec<&str> = sub.split(' ').collect();
        args.push("--help");
        let help = ok(&cluster, &args);
        assert!(help.contains("Example"), "{sub}: {help}");
    }
}

/// A fileserver that registered and accepts connections but never answers: an upload to it
/// stalls (until the client's stall timeout), holding a put inside `close()`.
fn hung_fileserver(cluster: &Cluster) -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    cluster
        .block_on(
            cluster
                .server_names()
                .register(&dfs_proto::names::RegisterRequest {
                    id: "hung".into(),
                    url: format!("http://127.0.0.1:{port}"),
                    capacity_bytes: 1 << 40,
                    free_bytes: 1 << 40,
                    dirs: Vec::new(),
                    secret: None,
                }),
        )
        .unwrap();
    listener
}

#[test]
fn ctrl_c_during_the_upload_publishes_nothing_and_leaves_no_name() {
    // One real fileserver and a hung one, replication 2: both are upload targets.
    let cluster = Cluster::start(1);
    let _hung = hung_fileserver(&cluster);
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    std::fs::write(&f, bytes(2 << 20, 9)).unwrap();
    let spools = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dfs"))
        .args(["put", s(&f), "/stuck"])
        .env("DFS_NAMESERVER", &cluster.nameserver)
        .env("DFS_KEY", admin_key(&cluster))
        .env("TMPDIR", spools.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the put has opened the file (its entry exists), then interrupt.
    let started = Instant::now();
    while !dfs(&cluster, &["stat", "/stuck"]).status.success() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "put never opened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    fails(&cluster, &["stat", "/stuck"], 1);
    // Nor is the local copy left in the temp directory.
    let left: Vec<_> = std::fs::read_dir(spools.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // The abandoned lease is still listed until it expires.
    let locks: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["locks", "--json"])).unwrap();
    assert_eq!(locks["leases"][0]["paths"][0], "/stuck", "{locks}");
    // Meanwhile another put of that file is refused at once, with the reason.
    let err = fails(&cluster, &["put", s(&f), "/stuck"], 1);
    assert!(
        err.starts_with("dfs: /stuck: ") && err.contains("is locked by"),
        "{err}"
    );
}

#[test]
fn a_progress_bar_only_on_a_terminal() {
    let cluster = Cluster::start(2);
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.bin");
    std::fs::write(&big, bytes(4 << 20, 5)).unwrap();
    // Not a terminal (the tests' pipes): nothing on stderr.
    let out = dfs(&cluster, &["put", s(&big), "/big"]);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    // A terminal, through script(1) when it is installed.
    if !Path::new("/usr/bin/script").exists() {
        return;
    }
    let command = format!(
        "{} put {} /big2 --nameserver {}",
        env!("CARGO_BIN_EXE_dfs"),
        s(&big),
        cluster.nameserver
    );
    let out = Command::new("/usr/bin/script")
        .args(["-qec", &command, "/dev/null"])
        .env("DFS_KEY", admin_key(&cluster))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("1/1 files") || shown.contains("0/1 files"),
        "{shown:?}"
    );
    assert!(ok(&cluster, &["stat", "--json", "/big2"]).contains("4194304"));
    let back = tmp.path().join("back.bin");
    let command = format!(
        "{} get /big2 {} --nameserver {}",
        env!("CARGO_BIN_EXE_dfs"),
        s(&back),
        cluster.nameserver
    );
    let out = Command::new("/usr/bin/script")
        .args(["-qec", &command, "/dev/null"])
        .env("DFS_KEY", admin_key(&cluster))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/1 files"),
        "{out:?}"
    );
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&big).unwrap());
}

/// A stand-in nameserver answering every request with one file `Entry` whose only location
/// is `location`, so that a `get` of it downloads from there.
fn fake_nameserver(location: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let location = location.clone();
            std::thread::spawn(move || {
                use std::io::{BufRead, BufReader, Write};
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    // Read one request head (no bodies: only GETs come here).
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let body = serde_json::json!({
                        "id": 7, "path": "/slow", "kind": "file", "size": 100 << 20,
                        "mode": 420, "mtime_ns": 0, "version": 3, "checksum": "e3069283",
                        "servers": ["hung"], "locations": [location],
                    })
                    .to_string();
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[test]
fn ctrl_c_during_get_leaves_no_temporary_file() {
    // The file's only fileserver sends its reply head and then nothing: the download stalls.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let location = format!("http://{}", hung.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hung.incoming().flatten() {
            use std::io::{BufRead, Write};
            let mut stream = stream;
            // The request head first, then a reply that stops after a few bytes.
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
                  content-length: 104857600\r\n\r\npartial",
            );
            held.push(stream);
        }
    });
    let nameserver = fake_nameserver(location);
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("slow");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dfs"))
        .args(["get", "/slow", s(&target), "--nameserver", &nameserver])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the temporary file next to the target, then interrupt.
    let started = Instant::now();
    while std::fs::read_dir(tmp.path()).unwrap().count() == 0 {
        if child.try_wait().unwrap().is_some() {
            panic!("get ended: {:?}", child.wait_with_output());
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "get never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A real fileserver on a runtime of its own, registered with `cluster`; dropping the
/// runtime kills it at once (connections cut mid-transfer, no goodbye).
fn own_fileserver(cluster: &Cluster) -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let config = dfs_servers::fileserver::Config {
        data: cluster.data.path().join("own-fileserver"),
        nameserver: cluster.nameserver.clone(),
        cluster_key: Some(cluster.keys.cluster_file.clone()),
        ..Default::default()
    };
    runtime.spawn(dfs_servers::fileserver::run(
        listener,
        config,
        std::future::pending::<()>(),
    ));
    runtime
}

#[test]
fn a_fileserver_killed_during_put_never_leaves_a_partial_file() {
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.bin");
    let content = bytes(48 << 20, 11);
    std::fs::write(&big, &content).unwrap();
    // Replication 3: every put uploads to the fileserver that is about to die, and two
    // copies are too few: the put fails and nothing is visible. Replication 2: the client
    // replaces a dead target with the third fileserver and the put completes.
    // The delays count from the moment the dying fileserver starts receiving the file, so
    // the kill lands inside the upload however fast this machine is.
    for (replication, delay_ms) in [(3, 0u64), (3, 10), (3, 30), (2, 10), (2, 30)] {
        let cluster = Cluster::start(2);
        let own = own_fileserver(&cluster);
        cluster.wait_for_fileservers(3);
        let factor = replication.to_string();
        ok(&cluster, &["map", "set", "/", "--replication", &factor]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_dfs"))
            .args(["put", s(&big), "/big"])
            .env("DFS_NAMESERVER", &cluster.nameserver)
            .env("DFS_KEY", admin_key(&cluster))
            .env("DFS_KEY", admin_key(&cluster))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // With replication 2 the dying fileserver may not be a target at all: then the put
        // ends without it, which is fine. With 3 it always is.
        let receiving = cluster.data.path().join("own-fileserver").join("tmp");
        let started_by = Instant::now() + Duration::from_secs(30);
        while std::fs::read_dir(&receiving).map_or(true, |mut d| d.next().is_none())
            && child.try_wait().unwrap().is_none()
        {
            assert!(
                Instant::now() < started_by,
                "the upload never reached the fileserver"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        own.shutdown_background();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.success(),
            replication == 2,
            "replication {replication}, killed {delay_ms} ms into the upload: {out:?}"
        );
        if out.status.success() {
            let back = tmp.path().join("back.bin");
            ok(&cluster, &["get", "/big", s(&back)]);
            assert!(
                std::fs::read(&back).unwrap() == content,
                "published bytes differ"
            );
        } else {
            assert_eq!(out.status.code(), Some(1), "{out:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.starts_with("dfs: /big: "), "{err}");
            fails(&cluster, &["stat", "/big"], 1);
        }
    }
}

#[test]
fn a_local_read_error_midway_publishes_nothing() {
    // /proc/self/mem is a regular file whose first read fails (EIO): the put has opened the
    // remote file and must give it up without the publish a dropped `File` would make.
    if !Path::new("/proc/self/mem").exists() {
        return;
    }
    let cluster = Cluster::start(2);
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    std::fs::write(&f, b"original").unwrap();
    ok(&cluster, &["put", s(&f), "/kept"]);
    let spools = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dfs"))
        .args(["put", "/proc/self/mem", "/kept"])
        .env("DFS_NAMESERVER", &cluster.nameserver)
        .env("DFS_KEY", admin_key(&cluster))
        .env("TMPDIR", spools.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("dfs: /proc/self/mem: "), "{err}");
    let left: Vec<_> = std::fs::read_dir(spools.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "the abandoned local copy is removed: {left:?}"
    );
    assert_eq!(ok(&cluster, &["cat", "/kept"]), "original");
    let stat: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["stat", "--json", "/kept"])).unwrap();
    assert_eq!(stat["size"], 8);
    // A new name is not left behind either.
    fails(&cluster, &["put", "/proc/self/mem", "/new"], 1);
    fails(&cluster, &["stat", "/new"], 1);
}

#[test]
fn xattr_and_mv_exchange() {
    let cluster = Cluster::start(1);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("f");
    std::fs::write(&src, b"A").unwrap();
    ok(&cluster, &["put", s(&src), "/a"]);
    std::fs::write(&src, b"B").unwrap();
    ok(&cluster, &["put", s(&src), "/b"]);

    assert_eq!(ok(&cluster, &["xattr", "/a"]), "");
    ok(
        &cluster,
        &["xattr", "/a", "user.who", "--set", "alice", "--create"],
    );
    ok(&cluster, &["xattr", "/a", "security.tag", "--set", "t"]);
    assert_eq!(ok(&cluster, &["xattr", "/a"]), "security.tag\nuser.who\n");
    assert_eq!(ok(&cluster, &["xattr", "/a", "user.who"]), "alice");
    let err = fails(
        &cluster,
        &["xattr", "/a", "user.who", "--set", "x", "--create"],
        1,
    );
    assert!(err.contains("already"), "{err}");
    let err = fails(&cluster, &["xattr", "/a", "user.none"], 1);
    assert!(err.contains("no attribute"), "{err}");
    let err = fails(&cluster, &["xattr", "/a", "system.posix_acl_access"], 1);
    assert!(err.contains("not supported"), "{err}");
    ok(
        &cluster,
        &["xattr", "/a", "user.who", "--set", "bob", "--replace"],
    );
    // A usage error: --create without --set.
    let out = dfs(&cluster, &["xattr", "/a", "user.who", "--create"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    ok(&cluster, &["mv", "--exchange", "/a", "/b"]);
    assert_eq!(ok(&cluster, &["cat", "/a"]), "B");
    assert_eq!(ok(&cluster, &["cat", "/b"]), "A");
    assert_eq!(ok(&cluster, &["xattr", "/b", "user.who"]), "bob");
    let err = fails(&cluster, &["mv", "--exchange", "/a", "/none"], 1);
    assert!(err.contains("/a"), "{err}");
    ok(&cluster, &["xattr", "/b", "user.who", "--remove"]);
    assert_eq!(ok(&cluster, &["xattr", "/b"]), "security.tag\n");
}

#[test]
fn ln_chmod_chown_and_what_ls_and_stat_show() {
    let cluster = Cluster::start(1);
    ok(&cluster, &["mkdir", "/d"]);
    ok(&cluster, &["mkdir", "/d/sub"]);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f");
    std::fs::write(&file, b"hello").unwrap();
    ok(&cluster, &["put", s(&file), "/d/f"]);
    ok(&cluster, &["ln", "-s", "f", "/d/link"]);
    ok(&cluster, &["chmod", "4750", "/d/f"]);
    ok(&cluster, &["chown", "1000:100", "/d/f"]);
    ok(&cluster, &["chown", ":200", "/d/sub"]);

    let ls = ok(&cluster, &["ls", "-l", "/d"]);
    let line = |name: &str| {
        ls.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} in {ls}"))
            .to_owned()
    };
    let f = line(" f");
    assert!(f.starts_with("-rwxr-x---"), "{f}");
    assert!(f.contains(" 1000   100 "), "owner and group: {f}");
    let link = line("link");
    assert!(
        link.starts_with('l') && link.ends_with("link -> f"),
        "{link}"
    );
    let sub = line("sub");
    assert!(sub.contains("     0   200 "), "{sub}");

    let st = ok(&cluster, &["stat", "/d/link"]);
    assert!(st.contains("kind: symbolic link"), "{st}");
    assert!(st.contains("target: f"), "{st}");
    let st = ok(&cluster, &["stat", "/d"]);
    assert!(st.contains("links: 3"), "2 + one subdirectory: {st}");
    let st = ok(&cluster, &["stat", "/d/f"]);
    // chown cleared the setuid bit chmod set, as chown(2) does.
    assert!(
        st.contains("mode: 0750") && st.contains("owner: uid 1000 gid 100"),
        "{st}"
    );

    let err = fails(&cluster, &["chmod", "999", "/d/f"], 2);
    assert!(err.contains("octal"), "{err}");
    fails(&cluster, &["chown", "alice", "/d/f"], 2);
    // A hard link: one file, two names.
    ok(&cluster, &["ln", "/d/f", "/d/hard"]);
    let st = ok(&cluster, &["stat", "/d/hard"]);
    assert!(st.contains("links: 2"), "{st}");
    assert_eq!(ok(&cluster, &["cat", "/d/hard"]), "hello");
    let err = fails(&cluster, &["ln", "/d/sub", "/d/sub2"], 1);
    assert!(err.contains("directories have no hard links"), "{err}");
    let err = fails(&cluster, &["ln", "-s", "f", "/d/link"], 1);
    assert!(err.contains("exists"), "{err}");
    for sub in ["ln", "chmod", "chown"] {
        let help = ok(&cluster, &[sub, "--help"]);
        assert!(help.contains("Examples:"), "{sub}: {help}");
    }
}
