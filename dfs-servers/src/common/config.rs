//! Config files: at most a few lines of JSON, every key optional, unknown keys refused.

use anyhow::Context;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Reads `path` as JSON into `T`, or returns `T::default()` when no file is given.
///
/// Unknown keys are an error (the config types use `deny_unknown_fields`) so a typo is caught
/// at start, not silently ignored.
pub fn load_config<T: DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}
