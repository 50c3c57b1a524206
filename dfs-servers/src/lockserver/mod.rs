//! The lockserver (see docs/api.md).
