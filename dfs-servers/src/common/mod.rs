//! Pieces every server shares: the HTTP serve loop and its TLS, JSON extractors, config
//! loading, tracing, fsync counting.

pub mod auth;
pub mod blocking;
pub mod certs;
pub mod config;
pub mod crash_backend;
pub mod extract;
pub mod fsyncs;
pub mod http;
pub mod limits;
pub mod policy;
pub mod tls;

pub use auth::{authenticated, Caller};
pub use blocking::run_blocking;
pub use config::load_config;
pub use extract::{ApiJson, ApiQuery};
pub use http::{
    announce_ready, api_fallbacks, base_url, bind, init_tracing, serve, serve_with_tls,
    shutdown_signal,
};
pub use policy::{needs, Need};
