//! Command line and `-o` mount options: one [`MountConfig`] whichever way they were given.
//!
//! `dfs-fuse URL DIR [-o a,b=c] [-f]` is the shape `mount.fuse3` uses when it runs a
//! `fuse.dfs-fuse` fstab line, so every setting of our own works both as a flag and as `-o`.
//! mount(8) runs `/sbin/mount.fuse.dfs SOURCE DIR [-sfnv] [-o OPTS]` for type `fuse.dfs`;
//! [`parse_mount_helper`] turns that shape into the same [`Args`].

use clap::Parser;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file system subtype: the mount shows in `/proc/mounts` as type `fuse.dfs`, and
/// `mount -t fuse.dfs` finds its helper as `mount.fuse.dfs`.
pub const SUBTYPE: &str = "dfs";

/// The name mount(8) runs for type `fuse.dfs`; `dfs` and `dfs-fuse` act as that helper when
/// started under it (a symlink `/sbin/mount.fuse.dfs`), so no separate script is needed.
pub const MOUNT_HELPER: &str = "mount.fuse.dfs";

/// Default bound of the local cache: large enough for a working set of big files.
pub const DEFAULT_CACHE_SIZE: u64 = 8 << 30;

/// The flags as typed; [`Args::into_config`] folds `-o` options in.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "dfs-fuse",
    version,
    about = "Mount a DFS cluster as a local directory (download on open, upload on close)"
)]
pub struct Args {
    /// Nameserver URL, e.g. http://127.0.0.1:7000 (the "source" of an fstab line).
    pub nameserver: String,
    /// Directory to mount on.
    pub mountpoint: PathBuf,
    /// Mount options, comma separated; may be repeated (see docs/mount.md).
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    /// Stay in the foreground instead of daemonising.
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Directory of the local file cache (also `-o cache_dir=DIR`).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Bound of the local cache in bytes, K/M/G suffixes allowed (also `-o cache_size=`).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// Seconds an open for writing waits for another client's lease before EBUSY
    /// (also `-o lock_wait=N`); 0 fails at once.
    #[arg(long, value_name = "SECONDS")]
    pub lock_wait: Option<f64>,
    /// Seconds the kernel may cache attributes (also `-o attr_timeout=`).
    #[arg(long, value_name = "SECONDS")]
    pub attr_timeout: Option<f64>,
    /// Seconds the kernel may resolve a name without asking (also `-o entry_timeout=`).
    #[arg(long, value_name = "SECONDS")]
    pub entry_timeout: Option<f64>,
    /// PEM certificate of the CA that signed the servers' certificates, for an https://
    /// cluster (also `-o ca=FILE`; default: the public web roots).
    #[arg(long, value_name = "FILE", env = "DFS_CA")]
    pub ca: Option<PathBuf>,
    /// Client key file (`dfs keygen client`; also `-o key=FILE`, or `DFS_KEY`).
    // The id is the one of `dfs --key`, so that `dfs mount` has one `--key`, this one.
    #[arg(long, id = "client_key", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Internal: the readiness pipe of a daemonising parent.
    #[arg(long, hide = true)]
    pub ready_fd: Option<i32>,
}

/// Everything the mount needs to know, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MountConfig {
    /// Nameserver base URL.
    pub nameserver: String,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Stay in the foreground.
    pub foreground: bool,
    /// The local cache directory.
    pub cache_dir: PathBuf,
    /// Cache bound in bytes (clean files are evicted above it).
    pub cache_size: u64,
    /// How long an open for writing waits for a busy lease.
    pub lock_wait: Duration,
    /// Kernel attribute cache lifetime: how stale `stat` may be.
    pub attr_timeout: Duration,
    /// Kernel name cache lifetime. Longer than the attributes' because a cached name only
    /// saves a lookup: `open` still revalidates with the nameserver, and `stat` re-asks
    /// after `attr_timeout`; a name removed elsewhere stops resolving then.
    pub entry_timeout: Duration,
    /// Mount read-only: writes fail with EROFS.
    pub read_only: bool,
    /// Let other users use the mount: on by default when root mounts (a shared mount, as
    /// NFS is), `-o noallow_other` turns it off.
    pub allow_other: bool,
    /// Let root use the mount.
    pub allow_root: bool,
    /// Let the kernel check permission bits and owners against the stored uid/gid/mode: on
    /// by default (files have owners), `-o nodefault_permissions` turns it off.
    pub default_permissions: bool,
    /// Record access times with relatime rules (`-o relatime`); off by default (`noatime`):
    /// an atime update is a durable nameserver write per read.
    pub relatime: bool,
    /// Kernel flags passed through unchanged (nosuid, nodev, noexec, noatime, ...).
    pub passthrough_flags: Vec<String>,
    /// Readiness pipe of a daemonising parent.
    pub ready_fd: Option<i32>,
    /// The CA that https:// servers' certificates must chain to (`None`: the web roots).
    pub ca: Option<PathBuf>,
    /// Ask the kernel for FUSE passthrough (on by default, `-o nopassthrough` turns it off):
    /// cached reads and writes at the local disk's speed. Falls back to the plain path by
    /// itself when the kernel (before 6.9) or our privileges (not root) do not allow it.
    pub kernel_passthrough: bool,
    /// `-o writeback`: close returns once the content is durable in the local cache; the
    /// mount publishes it in the background (docs/SEMANTICS.md, "Writeback").
    pub writeback: bool,
    /// The client key file every request is authenticated with: `--key`, else `-o key=`,
    /// else `DFS_KEY`; made absolute, since a daemonised mount changes directory.
    pub key: Option<PathBuf>,
}

/// Options mount(8) and fstab add that mean nothing to us.
const IGNORED: &[&str] = &[
    "rw",
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "_netdev",
    "nofail",
    "async",
    "dev",
    "suid",
    "exec",
    "atime",
    "norelatime",
    "strictatime",
];

/// Kernel flags we forward as they are.
const FORWARDED: &[&str] = &[
    "nosuid",
    "nodev",
    "noexec",
    "noatime",
    "nodiratime",
    "sync",
    "dirsync",
];

impl Args {
    /// Merges flags and `-o` options (flags win) into a [`MountConfig`].
    pub fn into_config(self) -> Result<MountConfig, String> {
        let mut cfg = MountConfig {
            nameserver: self.nameserver.trim_end_matches('/').to_owned(),
            mountpoint: self.mountpoint,
            foreground: self.foreground,
            cache_dir: PathBuf::new(),
            cache_size: DEFAULT_CACHE_SIZE,
            lock_wait: Duration::ZERO,
            attr_timeout: Duration::from_secs(1),
            entry_timeout: Duration::from_secs(10),
            read_only: false,
            // SAFETY: geteuid cannot fail and touches no memory.
            allow_other: unsafe { libc::geteuid() } == 0,
            allow_root: false,
            default_permissions: true,
            relatime: false,
            passthrough_flags: Vec::new(),
            ready_fd: self.ready_fd,
            kernel_passthrough: true,
            writeback: false,
            ca: None,
            key: None,
        };
        if !cfg.nameserver.starts_with("http://") && !cfg.nameserver.starts_with("https://") {
            return Err(format!(
                "nameserver must be an http:// or https:// URL, got {:?}",
                cfg.nameserver
            ));
        }
        let mut cache_dir = None;
        let mut ca = None;
        let mut key_file = None;
        for opt in self.options.iter().flat_map(|o| o.split(',')) {
            let opt = opt.trim();
            if opt.is_empty() || IGNORED.contains(&opt) || opt.starts_with("x-") {
                continue;
            }
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            match key {
                "cache_dir" => cache_dir = Some(PathBuf::from(need(key, value)?)),
                "ca" => ca = Some(PathBuf::from(need(key, value)?)),
                "key" => key_file = Some(PathBuf::from(need(key, value)?)),
                "cache_size" => cfg.cache_size = parse_size(need(key, value)?)?,
                "lock_wait" => cfg.lock_wait = parse_secs(need(key, value)?)?,
                "attr_timeout" => cfg.attr_timeout = parse_secs(need(key, value)?)?,
                "entry_timeout" => cfg.entry_timeout = parse_secs(need(key, value)?)?,
                "ro" => cfg.read_only = true,
                "allow_other" => cfg.allow_other = true,
                "noallow_other" => cfg.allow_other = false,
                "nodefault_permissions" => cfg.default_permissions = false,
                "relatime" => cfg.relatime = true,
                "noatime" => {
                    cfg.relatime = false;
                    cfg.passthrough_flags.push(key.to_owned());
                }
                "allow_root" => cfg.allow_root = true,
                "default_permissions" => cfg.default_permissions = true,
                "foreground" => cfg.foreground = true,
                "passthrough" => cfg.kernel_passthrough = true,
                "nopassthrough" => cfg.kernel_passthrough = false,
                "writeback" => cfg.writeback = true,
                "nowriteback" => cfg.writeback = false,
                // fsname/subtype are set by us; mount.fuse3 may pass them along.
                "fsname" | "subtype" => {}
                _ if value.is_none() && FORWARDED.contains(&key) => {
                    cfg.passthrough_flags.push(key.to_owned())
                }
                _ => return Err(format!("unknown mount option {opt:?}")),
            }
        }
        if let Some(dir) = self.cache_dir.or(cache_dir) {
            cfg.cache_dir = dir;
        }
        cfg.ca = self.ca.or(ca);
        let key = self
            .key
            .or(key_file)
            .or_else(|| std::env::var_os(dfs_proto::auth::KEY_ENV).map(PathBuf::from));
        if let Some(key) = key {
            cfg.key = Some(
                std::path::absolute(&key)
                    .map_err(|err| format!("bad key path {}: {err}", key.display()))?,
            );
        }
        if let Some(size) = self.cache_size {
            cfg.cache_size = size;
        }
        if let Some(secs) = self.lock_wait {
            cfg.lock_wait = secs_to_duration(secs)?;
        }
        if let Some(secs) = self.attr_timeout {
            cfg.attr_timeout = secs_to_duration(secs)?;
        }
        if let Some(secs) = self.entry_timeout {
            cfg.entry_timeout = secs_to_duration(secs)?;
        }
        if cfg.cache_dir.as_os_str().is_empty() {
            cfg.cache_dir = default_cache_dir(&cfg.mountpoint);
        }
        Ok(cfg)
    }
}

/// `$XDG_CACHE_HOME/dfs-fuse/<mountpoint>` (or `~/.cache/...`), one directory per mount point
/// so two mounts on one machine never share dirty files.
pub fn default_cache_dir(mountpoint: &std::path::Path) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    let abs = std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let flat: String = abs
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    base.join("dfs-fuse")
        .join(if flat.is_empty() { "root".into() } else { flat })
}

/// Whether `argv0` (the name this program was started under) is [`MOUNT_HELPER`].
pub fn invoked_as_mount_helper(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name() == Some(OsStr::new(MOUNT_HELPER))
}

/// What mount(8) asked of `mount.fuse.dfs`, in the shape of our own command line.
#[derive(Debug, Clone, PartialEq)]
pub struct HelperCall {
    /// `SOURCE DIR [-o OPTS]`: the arguments `dfs-fuse` (or `dfs mount`) takes for this mount.
    pub args: Vec<OsString>,
    /// `-f` ("fake"): check the arguments, do not mount (mount(8) then only records it).
    pub fake: bool,
}

/// Parses `SOURCE DIR [-sfnv] [-o OPTS] [-t TYPE]`, what mount(8) passes to
/// `/sbin/mount.<type>` helpers (mount(8), "External helpers"). `-s` (sloppy), `-n` (no
/// mtab) and `-v` mean nothing here; `-t fuse.dfs` is accepted, any other type refused.
pub fn parse_mount_helper(argv: &[OsString]) -> Result<HelperCall, String> {
    let mut positional = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let mut fake = false;
    let mut rest = argv.iter();
    while let Some(arg) = rest.next() {
        let text = arg.to_string_lossy();
        if !text.starts_with('-') || text == "-" {
            positional.push(arg.clone());
            continue;
        }
        let mut flags = text[1..].chars();
        while let Some(flag) = flags.next() {
            match flag {
                's' | 'n' | 'v' => {}
                'f' => fake = true,
                'o' | 't' | 'N' => {
                    let inline: String = flags.by_ref().collect();
                    let value = if inline.is_empty() {
                        rest.next()
                            .map(|v| v.to_string_lossy().into_owned())
                            .ok_or_else(|| format!("option -{flag} needs a value"))?
                    } else {
                        inline
                    };
                    match flag {
                        'o' => options.push(value),
                        't' if value == format!("fuse.{SUBTYPE}") || value == SUBTYPE => {}
                        't' => return Err(format!("cannot mount file system type {value:?}")),
                        _ => return Err("mount namespaces (-N) are not supported".to_owned()),
                    }
                }
                other => return Err(format!("unknown mount helper flag -{other}")),
            }
        }
    }
    let [source, dir] = <[OsString; 2]>::try_from(positional)
        .map_err(|_| "usage: mount.fuse.dfs SOURCE DIR [-sfnv] [-o OPTIONS]".to_owned())?;
    let mut args = vec![source, dir];
    let options: Vec<&str> = options
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
        .collect();
    if !options.is_empty() {
        args.push("-o".into());
        args.push(options.join(",").into());
    }
    Ok(HelperCall { args, fake })
}

/// Parses `123`, `64K`, `512M`, `8G`, `1T` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("bad size suffix in {text:?}")),
            };
            (&text[..i], shift)
        }
        _ => (text, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("bad size {text:?}: expected a number of bytes"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

fn need<'a>(key: &str, value: Option<&'a str>) -> Result<&'a str, String> {
    value.ok_or_else(|| format!("option {key} needs a value"))
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("bad number of seconds {text:?}"))?;
    secs_to_duration(secs)
}

fn secs_to_duration(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|_| format!("bad number of seconds {secs}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<MountConfig, String> {
        let args = Args::try_parse_from(std::iter::once("dfs-fuse").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        args.into_config()
    }

    #[test]
    fn the_key_comes_from_the_flag_then_the_option_and_is_made_absolute() {
        let by_option = parse(&["http://ns:7000", "/mnt", "-o", "key=rel/k.key"]).unwrap();
        let key = by_option.key.unwrap();
        assert!(key.is_absolute() && key.ends_with("rel/k.key"), "{key:?}");
        let both = parse(&[
            "http://ns:7000",
            "/mnt",
            "-o",
            "key=/from/option",
            "--key",
            "/from/flag",
        ])
        .unwrap();
        assert_eq!(both.key, Some(PathBuf::from("/from/flag")));
        assert!(parse(&["http://ns:7000", "/mnt", "-o", "key"]).is_err());
    }

    #[test]
    fn flags_and_o_options_agree() {
        let a = parse(&[
            "http://ns:7000/",
            "/mnt/dfs",
            "--cache-dir",
            "/c",
            "--cache-size",
            "1G",
            "--lock-wait",
            "5",
        ])
        .unwrap();
        let b = parse(&[
            "http://ns:7000",
            "/mnt/dfs",
            "-o",
            "cache_dir=/c,cache_size=1073741824",
            "-o",
            "lock_wait=5",
        ])
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.nameserver, "http://ns:7000");
        assert_eq!(a.cache_size, 1 << 30);
        assert_eq!(a.lock_wait, Duration::from_secs(5));
        assert_eq!(a.attr_timeout, Duration::from_secs(1));
        assert_eq!(a.entry_timeout, Duration::from_secs(10));
        let t = parse(&["http://ns", "/m", "-o", "entry_timeout=2.5,attr_timeout=0"]).unwrap();
        assert_eq!(t.entry_timeout, Duration::from_millis(2500));
        assert_eq!(t.attr_timeout, Duration::ZERO);
        assert!(!a.foreground);
        assert!(a.kernel_passthrough, "passthrough is asked for by default");
        let p = parse(&["http://ns", "/m", "-o", "nopassthrough"]).unwrap();
        assert!(!p.kernel_passthrough);
        let p = parse(&["http://ns", "/m", "-o", "nopassthrough,passthrough"]).unwrap();
        assert!(p.kernel_passthrough);
        assert!(!a.writeback, "writeback is opt-in");
        let w = parse(&["http://ns", "/m", "-o", "writeback"]).unwrap();
        assert!(w.writeback);
    }

    #[test]
    fn permissions_sharing_and_atime_defaults_are_switchable() {
        let d = parse(&["http://ns", "/m"]).unwrap();
        assert!(d.default_permissions, "the kernel checks modes by default");
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        assert_eq!(d.allow_other, root, "shared when root mounts");
        assert!(!d.relatime, "noatime is the default");
        let o = parse(&[
            "http://ns",
            "/m",
            "-o",
            "nodefault_permissions,noallow_other,relatime",
        ])
        .unwrap();
        assert!(!o.default_permissions && !o.allow_other && o.relatime);
        let n = parse(&["http://ns", "/m", "-o", "relatime,noatime"]).unwrap();
        assert!(!n.relatime);
        assert!(n.passthrough_flags.contains(&"noatime".to_string()));
    }

    #[test]
    fn the_ca_comes_from_a_flag_or_an_o_option() {
        let o = parse(&["https://ns:7000", "/m", "-o", "ca=/etc/dfs/ca.pem"]).unwrap();
        assert_eq!(o.ca, Some(PathBuf::from("/etc/dfs/ca.pem")));
        let flag = parse(&["https://ns:7000", "/m", "--ca", "/etc/dfs/ca.pem"]).unwrap();
        assert_eq!(o, flag);
        let both = parse(&["https://ns", "/m", "-o", "ca=/a.pem", "--ca", "/b.pem"]).unwrap();
        assert_eq!(both.ca, Some(PathBuf::from("/b.pem")), "the flag wins");
        assert!(parse(&["https://ns", "/m", "-o", "ca"]).is_err());
    }

    #[test]
    fn flags_win_over_o_options() {
        let c = parse(&["http://ns", "/m", "-o", "lock_wait=1", "--lock-wait", "2"]).unwrap();
        assert_eq!(c.lock_wait, Duration::from_secs(2));
    }

    #[test]
    fn mount_helper_shape_and_fstab_noise_are_accepted() {
        // What mount.fuse3 runs for: http://ns:7000 /mnt/dfs fuse.dfs-fuse rw,_netdev,... 0 0
        let c = parse(&[
            "http://ns:7000",
            "/mnt/dfs",
            "-o",
            "rw,_netdev,nofail,x-systemd.automount,allow_other,default_permissions,nosuid,attr_timeout=0.5,ro",
        ])
        .unwrap();
        assert!(c.allow_other && c.default_permissions && c.read_only);
        assert_eq!(c.passthrough_flags, vec!["nosuid".to_owned()]);
        assert_eq!(c.attr_timeout, Duration::from_millis(500));
        assert!(c.cache_dir.ends_with("dfs-fuse/mnt_dfs"));
    }

    #[test]
    fn bad_input_is_refused_with_a_message() {
        assert!(parse(&["ns:7000", "/m"]).unwrap_err().contains("http://"));
        assert!(parse(&["http://ns", "/m", "-o", "bogus"])
            .unwrap_err()
            .contains("bogus"));
        assert!(parse(&["http://ns", "/m", "-o", "cache_size=12X"]).is_err());
        assert!(parse(&["http://ns", "/m", "-o", "lock_wait"]).is_err());
        assert!(parse(&["http://ns", "/m", "--lock-wait", "-1"]).is_err());
        assert!(parse(&["http://ns"]).is_err());
    }

    #[test]
    fn mount_helper_arguments_become_our_own() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let call = parse_mount_helper(&os(&[
            "http://ns:7000",
            "/mnt/dfs",
            "-sv",
            "-o",
            "rw,_netdev",
            "-olock_wait=5",
            "-t",
            "fuse.dfs",
        ]))
        .unwrap();
        assert!(!call.fake);
        assert_eq!(
            call.args,
            os(&["http://ns:7000", "/mnt/dfs", "-o", "rw,_netdev,lock_wait=5"])
        );
        let fake = parse_mount_helper(&os(&["http://ns", "/m", "-f"])).unwrap();
        assert!(fake.fake);
        assert_eq!(fake.args, os(&["http://ns", "/m"]));
        assert!(parse_mount_helper(&os(&["http://ns"])).is_err());
        assert!(parse_mount_helper(&os(&["http://ns", "/m", "-t", "nfs"])).is_err());
        assert!(parse_mount_helper(&os(&["http://ns", "/m", "-x"])).is_err());
        assert!(parse_mount_helper(&os(&["http://ns", "/m", "-o"])).is_err());
        assert!(invoked_as_mount_helper(OsStr::new("/sbin/mount.fuse.dfs")));
        assert!(!invoked_as_mount_helper(OsStr::new("/usr/bin/dfs-fuse")));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("3M").unwrap(), 3 << 20);
        assert!(parse_size("99999999999T").is_err());
        assert!(parse_size("").is_err());
    }
}
