//! The nameserver (see docs/api.md).
