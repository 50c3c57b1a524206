//! The content checksum carried with every version, so corruption is caught end to end.

use serde::{Deserialize, Serialize};
use std::fmt;

/// CRC-32C of a file's bytes: hardware-accelerated, so checking it costs nothing next to I/O.
///
/// On the wire it is 8 lower-case hex digits, e.g. `"e3069283"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Checksum(pub u32);

impl Checksum {
    /// The checksum of zero bytes, which is what a freshly created file holds.
    pub const EMPTY: Checksum = Checksum(0);

    /// Parses the 8-hex-digit wire form.
    pub fn parse(text: &str) -> Option<Checksum> {
        if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(text, 16).ok().map(Checksum)
    }

    /// Checksum of a whole buffer.
    pub fn of(bytes: &[u8]) -> Checksum {
        Checksum(crc32c::crc32c(bytes))
    }

    /// Checksum of a local file, read in 1 MiB pieces so that a file of any size costs
    /// constant memory. Blocking.
    pub fn of_file(path: &std::path::Path) -> std::io::Result<Checksum> {
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let mut sum = ChecksumWriter::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(sum.finish());
            }
            sum.update(&buf[..n]);
        }
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl Serialize for Checksum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Checksum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Checksum::parse(&text)
            .ok_or_else(|| serde::de::Error::custom("checksum must be 8 hex digits"))
    }
}

/// Computes a checksum incrementally while a body streams through.
#[derive(Default, Debug, Clone)]
pub struct ChecksumWriter {
    state: u32,
}

impl ChecksumWriter {
    /// Feeds the next chunk.
    pub fn update(&mut self, bytes: &[u8]) {
        self.state = crc32c::crc32c_append(self.state, bytes);
    }

    /// The checksum of everything fed so far.
    pub fn finish(&self) -> Checksum {
        Checksum(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_matches_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut w = ChecksumWriter::default();
        for chunk in data.chunks(333) {
            w.update(chunk);
        }
        assert_eq!(w.finish(), Checksum::of(&data));
        assert_eq!(Checksum::of(b""), Checksum::EMPTY);
        let path = std::env::temp_dir().join(format!("dfs-checksum-{}", std::process::id()));
        std::fs::write(&path, &data).unwrap();
        let of_file = Checksum::of_file(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(of_file.unwrap(), Checksum::of(&data));
    }

    #[test]
    fn wire_form_round_trips() {
        let c = Checksum(0x0a1b2c3d);
        assert_eq!(c.to_string(), "0a1b2c3d");
        assert_eq!(Checksum::parse("0a1b2c3d"), Some(c));
        assert_eq!(Checksum::parse("xyz"), None);
        assert_eq!(Checksum::parse("+a1b2c3d"), None);
    }
}
