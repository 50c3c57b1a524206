//! The DFS mount: filesystem logic as a library, a thin fuser adapter, and the binary.
