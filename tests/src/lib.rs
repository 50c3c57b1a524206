//! Helpers shared by the end-to-end tests: start clusters, mounts and processes.
