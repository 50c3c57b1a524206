//! Keys of a test cluster: a cluster key and a read-write client key in its temp dir, so the
//! whole suite runs with authentication on, and a way for tests to make other keys.
//!
//! Mounts and server processes are started by nameserver URL alone in many tests; the
//! registry here maps a cluster's nameserver URL to its client key file, so [`crate::mount`]
//! finds the key without every test passing it.

use dfs_proto::auth::{ClientKey, ClusterKey, Credential, Role};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// A test cluster's keys and their files.
#[derive(Clone, Debug)]
pub struct TestKeys {
    /// The servers' shared secret; tests issue other client keys with it.
    pub cluster: ClusterKey,
    /// The file the servers read it from (`--cluster-key`).
    pub cluster_file: PathBuf,
    /// The read-write key every mount and client of the test uses by default.
    pub client: ClientKey,
    /// Its file (`--key`).
    pub client_file: PathBuf,
}

impl TestKeys {
    /// Makes a cluster key and a read-write client key and writes both into `dir`.
    pub fn make(dir: &Path) -> TestKeys {
        let cluster = ClusterKey::generate();
        let cluster_file = dir.join("cluster.key");
        std::fs::write(&cluster_file, format!("{}\n", cluster.to_text()))
            .expect("write the test cluster key");
        let client = cluster
            .issue_client("test-rw", Role::ReadWrite)
            .expect("a valid key name");
        let client_file = dir.join("client.key");
        std::fs::write(&client_file, format!("{}\n", client.to_text()))
            .expect("write the test client key");
        TestKeys {
            cluster,
            cluster_file,
            client,
            client_file,
        }
    }

    /// A new client key of this cluster with `role`.
    pub fn issue(&self, name: &str, role: Role) -> ClientKey {
        self.cluster.issue_client(name, role).expect("a valid name")
    }

    /// The read-write key's credential.
    pub fn credential(&self) -> Credential {
        self.client.credential()
    }

    /// The servers' credential.
    pub fn server_credential(&self) -> Credential {
        self.cluster.server_credential()
    }
}

fn registry() -> &'static Mutex<HashMap<String, PathBuf>> {
    static KEYS: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    KEYS.get_or_init(Mutex::default)
}

/// Records that clients of the nameserver at `url` use the key in `file`.
pub fn register(url: &str, file: &Path) {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(url.trim_end_matches('/').to_owned(), file.to_owned());
}

/// The client key file of the cluster whose nameserver is at `url`, when a test cluster
/// registered one.
pub fn key_file_for(url: &str) -> Option<PathBuf> {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(url.trim_end_matches('/'))
        .cloned()
}

/// The client key of the test cluster whose nameserver is at `url`; panics when no test
/// cluster registered that URL.
pub fn client_key_for(url: &str) -> ClientKey {
    let file =
        key_file_for(url).unwrap_or_else(|| panic!("no test cluster registered a key for {url}"));
    ClientKey::load(&file).expect("the test client key reads")
}

/// The credential of [`client_key_for`].
pub fn credential_for(url: &str) -> Credential {
    client_key_for(url).credential()
}
