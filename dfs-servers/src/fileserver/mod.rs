//! The fileserver (see docs/api.md).
