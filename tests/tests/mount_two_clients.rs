//! Two mounts of one cluster: close-to-open visibility, the automatic write lock (EBUSY for a
//! second writer while readers still read the last published version), and the cache
//! (re-opening an unchanged file downloads nothing, proven by fileserver counters).

use dfs_tests::cluster::Cluster;
use dfs_tests::mount::Mount;
use std::fs::OpenOptions;
use std::io::{Read, Write};

fn downloads(cluster: &Cluster) -> (u64, u64) {
    let files = cluster.files();
    cluster.fileservers.iter().fold((0, 0), |(d, b), url| {
        let s = cluster
            .block_on(files.stats(url))
            .expect("fileserver stats");
        (d + s.downloads, b + s.bytes_out)
    })
}

#[test]
fn write_on_one_mount_read_on_the_other() {
    let cluster = Cluster::start(2);
    let Some(a) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    let b = Mount::start(&cluster.nameserver, &[]);
    std::fs::write(a.path("shared.txt"), b"version one").unwrap();
    assert_eq!(std::fs::read(b.path("shared.txt")).unwrap(), b"version one");
    std::fs::write(a.path("shared.txt"), b"version two, longer").unwrap();
    // open() always revalidates, so the new content (and size) is seen at once.
    assert_eq!(
        std::fs::read(b.path("shared.txt")).unwrap(),
        b"version two, longer"
    );
    std::fs::create_dir(b.path("dir")).unwrap();
    std::fs::write(b.path("dir/f"), b"from b").unwrap();
    assert_eq!(std::fs::read(a.path("dir/f")).unwrap(), b"from b");
}

#[test]
fn second_writer_gets_ebusy_while_readers_read_the_old_version() {
    let cluster = Cluster::start(2);
    let Some(a) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    let b = Mount::start(&cluster.nameserver, &[]);
    std::fs::write(a.path("f"), b"old").unwrap();

    let mut writer = OpenOptions::new().write(true).open(a.path("f")).unwrap();
    writer.write_all(b"new content").unwrap();

    // Another client cannot write...
    let err = OpenOptions::new()
        .append(true)
        .open(b.path("f"))
        .expect_err("second writer must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    // ... nor can this mount's O_TRUNC from the other side.
    let err = std::fs::write(b.path("f"), b"x").expect_err("busy");
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    // Readers are not blocked and see the last published version.
    assert_eq!(std::fs::read(b.path("f")).unwrap(), b"old");

    drop(writer); // close publishes
    assert_eq!(std::fs::read(b.path("f")).unwrap(), b"new content");
    // The lease was given back at close: the other mount can write now.
    let mut w2 = OpenOptions::new().append(true).open(b.path("f")).unwrap();
    w2.write_all(b"!").unwrap();
    drop(w2);
    assert_eq!(std::fs::read(a.path("f")).unwrap(), b"new content!");
}

#[test]
fn reopening_an_unchanged_file_downloads_nothing() {
    let cluster = Cluster::start(2);
    let Some(a) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    let b = Mount::start(&cluster.nameserver, &[]);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(a.path("c.bin"), &data).unwrap();

    // The writer's own mount keeps the published file as its clean copy: no download.
    let before = downloads(&cluster);
    assert_eq!(std::fs::read(a.path("c.bin")).unwrap(), data);
    assert_eq!(downloads(&cluster), before, "writer re-read downloaded");

    // The other mount downloads once...
    assert_eq!(std::fs::read(b.path("c.bin")).unwrap(), data);
    let after_first = downloads(&cluster);
    assert_eq!(after_first.0, before.0 + 1);
    assert_eq!(after_first.1, before.1 + data.len() as u64);
    // ... and never again while the file is unchanged.
    for _ in 0..5 {
        let mut f = std::fs::File::open(b.path("c.bin")).unwrap();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, data);
    }
    assert_eq!(downloads(&cluster), after_first, "re-open downloaded");

    // A change elsewhere is downloaded exactly once more.
    std::fs::write(a.path("c.bin"), b"changed").unwrap();
    assert_eq!(std::fs::read(b.path("c.bin")).unwrap(), b"changed");
    assert_eq!(downloads(&cluster).0, after_first.0 + 1);
}
