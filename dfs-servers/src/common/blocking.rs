//! Running a blocking store call (a commit that waits for an fsync) from a request handler.

use dfs_proto::ApiError;
use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f`, which blocks on the disk, from async code, on this thread when it can.
///
/// On a multi-thread runtime the call runs in place (`block_in_place`): the worker hands its
/// other tasks to another thread and the request continues here, so the reply goes out
/// without two thread wake-ups (to the blocking pool and back), which cost about as much as
/// the fsync itself on a small VM. A current-thread runtime (unit tests) cannot give its only
/// worker away, so there the call goes to the blocking pool as before.
pub async fn run_blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => tokio::task::spawn_blocking(f)
            .await
            .map_err(|err| ApiError::internal(format!("blocking task failed: {err}")))?,
    }
}

#[cfg(test)]
mod tests {
    use super::run_blocking;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_in_place_on_a_multi_thread_runtime() {
        let caller = std::thread::current().id();
        let ran_on = run_blocking(move || Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_eq!(ran_on, caller, "no hop to the blocking pool");
    }

    #[tokio::test]
    async fn falls_back_to_the_blocking_pool_on_a_current_thread_runtime() {
        let caller = std::thread::current().id();
        let ran_on = run_blocking(move || Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_ne!(ran_on, caller);
    }

    #[tokio::test]
    async fn passes_errors_through() {
        let err = run_blocking(|| Err::<(), _>(dfs_proto::ApiError::internal("disk")))
            .await
            .unwrap_err();
        assert!(err.message.contains("disk"));
    }
}
