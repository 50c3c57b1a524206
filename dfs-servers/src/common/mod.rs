//! Pieces every server shares: the HTTP serve loop, JSON extractors, config loading, tracing.

pub mod auth;
pub mod blocking;
pub mod config;
pub mod crash_backend;
pub mod extract;
pub mod http;
pub mod policy;

pub use auth::{authenticated, Caller};
pub use blocking::run_blocking;
pub use config::load_config;
pub use extract::{ApiJson, ApiQuery};
pub use http::{announce_ready, api_fallbacks, bind, init_tracing, serve, shutdown_signal};
pub use policy::{needs, Need};
