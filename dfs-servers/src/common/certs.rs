//! A local certificate authority and one server certificate it signed, for `dfs up --tls` and
//! tests: enough for a cluster on one machine (127.0.0.1, ::1, localhost) to speak https
//! without any tool beyond `dfs`.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Names every local certificate is valid for.
pub const LOCAL_NAMES: &[&str] = &["127.0.0.1", "::1", "localhost"];

/// Years a generated certificate stays valid.
const VALID_YEARS: i32 = 10;

/// Where the files of a local CA are, all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalCerts {
    /// The CA certificate: what clients trust (`--ca`).
    pub ca: PathBuf,
    /// The server certificate (`--tls-cert`), signed by the CA.
    pub cert: PathBuf,
    /// The server's private key (`--tls-key`), readable by its owner only.
    pub key: PathBuf,
}

impl LocalCerts {
    /// The file names inside `dir`: `ca.pem`, `server.pem`, `server.key`.
    pub fn in_dir(dir: &Path) -> LocalCerts {
        LocalCerts {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }

    /// The certificates in `dir`, made there first if any file is missing. Reusing them
    /// keeps a restarted cluster trusted by clients that were given its `ca.pem`. The CA's
    /// own key is never written: nothing else can be signed with it later.
    pub fn ensure(dir: &Path) -> anyhow::Result<LocalCerts> {
        let certs = LocalCerts::in_dir(dir);
        if certs.ca.exists() && certs.cert.exists() && certs.key.exists() {
            return Ok(certs);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let made = generate(LOCAL_NAMES).context("cannot make a local CA")?;
        write(&certs.ca, &made.ca, 0o644)?;
        write(&certs.cert, &made.cert, 0o644)?;
        write(&certs.key, &made.key, 0o600)?;
        Ok(certs)
    }
}

/// PEM texts of a fresh CA and a server certificate and key it signed.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The CA certificate.
    pub ca: String,
    /// The server certificate.
    pub cert: String,
    /// The server's private key (PKCS#8).
    pub key: String,
}

/// A fresh CA and a server certificate for `names` (IP addresses or DNS names), ECDSA P-256.
pub fn generate(names: &[&str]) -> anyhow::Result<Generated> {
    let year = current_year();

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = name("DFS local CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut ca, year);
    let ca = ca.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut server = CertificateParams::new(names)?;
    server.distinguished_name = name("DFS server");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut server, year);
    let server = server.signed_by(&key, &ca, &ca_key)?;

    Ok(Generated {
        ca: ca.pem(),
        cert: server.pem(),
        key: key.serialize_pem(),
    })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// From the start of last year (a clock slightly behind still accepts it) to
/// [`VALID_YEARS`] from now.
fn set_validity(params: &mut CertificateParams, year: i32) {
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + VALID_YEARS, 1, 1);
}

/// The current year (UTC), to within a day: precise enough for validity bounds that start a
/// year early.
fn current_year() -> i32 {
    const SECONDS_PER_YEAR: u64 = 31_556_952; // 365.2425 days
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + i32::try_from(secs / SECONDS_PER_YEAR).unwrap_or(0)
}

fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ensure_makes_the_files_once_and_keeps_the_key_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalCerts::ensure(dir.path()).unwrap();
        let ca = std::fs::read_to_string(&first.ca).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
        let mode = std::fs::metadata(&first.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second run reuses them: clients given ca.pem keep trusting the cluster.
        let again = LocalCerts::ensure(dir.path()).unwrap();
        assert_eq!(again, first);
        assert_eq!(std::fs::read_to_string(&again.ca).unwrap(), ca);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            3,
            "no CA key on disk"
        );
    }
}
