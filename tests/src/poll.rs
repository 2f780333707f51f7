//! The one poller of the test bed and its tools: ask again until the answer is yes, or give
//! up after a timeout with the last answer. Waiting is always for a state, never for a time:
//! nothing here measures how long convergence took.
use std::future::Future;
use std::time::Duration;

/// Polls `probe` every `every` until it returns `Ok`; once `timeout` has passed, returns the
/// last `Err` it returned (what is still missing, for the caller to report).
pub async fn until<T, E, F, Fut>(timeout: Duration, every: Duration, mut probe: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if tokio::time::Instant::now() > deadline {
            return Err(last);
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_ok_and_otherwise_the_last_error() {
        let mut n = 0;
        let got: Result<u32, String> = until(Duration::from_secs(5), Duration::ZERO, || {
            n += 1;
            let v = n;
            async move {
                if v == 3 {
                    Ok(v)
                } else {
                    Err(format!("try {v}"))
                }
            }
        })
        .await;
        assert_eq!(got, Ok(3));

        let mut n = 0;
        let got: Result<(), String> = until(Duration::ZERO, Duration::ZERO, || {
            n += 1;
            let v = n;
            async move { Err(format!("try {v}")) }
        })
        .await;
        assert_eq!(got, Err("try 1".to_string()));
    }
}
