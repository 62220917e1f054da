//! Retries as a decorator over any [`ObjectStore`]: a transient failure
//! (the store says `Unavailable`) of a request that is safe to repeat is
//! tried again after a pause, so every store gets the same policy whether
//! or not its plugin retries on its own (the bundled `s3-upload` does; a
//! third party's may not).
//!
//! Safe to repeat: reads, stats, lists, deletes and aborts (idempotent), and
//! sending a part (the same number replaces the part). Not repeated:
//! beginning an upload (a lost reply would leave an upload nobody knows
//! the token of) and finishing one (it is conditional: a repeat after a
//! lost success would be refused, and the caller must see that, not a
//! second attempt's answer).
//!
//! A store found down is not waited for by every request of the same work:
//! once a request has failed with every attempt spent, the following ones
//! get one attempt each until one succeeds. (The abort after a failed
//! upload would otherwise spend the whole budget again, and each attempt
//! may be a plugin's own minute of retries.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{ObjectInfo, ObjectStore};
use crate::error::CoreError;

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retry).
    pub attempts: u32,
    /// Pause before the first retry; doubled before each next one.
    pub first_pause: Duration,
}

impl Default for RetryPolicy {
    /// Two attempts, the second after 0.5 s: a failure that outlasted the
    /// plugin's own retries gets one more chance (an hour-long restore is
    /// not lost to one blip), while a store that is really down is not
    /// waited for many times over (each attempt may spend the plugin's
    /// whole retry budget).
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            first_pause: Duration::from_millis(500),
        }
    }
}

/// An [`ObjectStore`] that retries the transient failures of `inner`.
pub struct Retrying {
    inner: Arc<dyn ObjectStore>,
    policy: RetryPolicy,
    /// Set when the work is cancelled: no pause, no further attempt.
    cancel: Option<Arc<AtomicBool>>,
    /// The last request failed transiently for good; cleared by a success.
    down: AtomicBool,
}

impl Retrying {
    pub fn new(inner: Arc<dyn ObjectStore>, policy: RetryPolicy, cancel: Option<Arc<AtomicBool>>) -> Retrying {
        Retrying {
            inner,
            policy,
            cancel,
            down: AtomicBool::new(false),
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Runs `call` until it succeeds, fails for good, or the attempts are
    /// spent (one only while the store is down); the last failure names
    /// how many attempts were made.
    fn again<T>(&self, what: &'static str, mut call: impl FnMut() -> Result<T, CoreError>) -> Result<T, CoreError> {
        let mut pause = self.policy.first_pause;
        let attempts = if self.down.load(Ordering::Relaxed) {
            1
        } else {
            self.policy.attempts.max(1)
        };
        let mut attempt = 1;
        loop {
            match call() {
                Ok(v) => {
                    self.down.store(false, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(CoreError::Unavailable(m)) if attempt < attempts && !self.cancelled() => {
                    tracing::warn!(store = self.inner.name(), attempt, "{what} failed ({m}); retrying");
                    crate::metrics::store_retry(self.inner.name(), what);
                    self.sleep(pause);
                    if self.cancelled() {
                        return Err(CoreError::Cancelled);
                    }
                    pause = pause.saturating_mul(2);
                    attempt += 1;
                }
                Err(CoreError::Unavailable(m)) if attempts > 1 => {
                    self.down.store(true, Ordering::Relaxed);
                    return Err(CoreError::Unavailable(format!(
                        "{m} (the server sent this request {attempt} times)"
                    )));
                }
                Err(CoreError::Unavailable(m)) => {
                    self.down.store(true, Ordering::Relaxed);
                    return Err(CoreError::Unavailable(m));
                }
                other => return other,
            }
        }
    }

    /// Notes the outcome of a request made once (never repeated): a
    /// success means the store is up, a transient failure that it is down.
    fn noted<T>(&self, result: Result<T, CoreError>) -> Result<T, CoreError> {
        match &result {
            Ok(_) => self.down.store(false, Ordering::Relaxed),
            Err(CoreError::Unavailable(_)) => self.down.store(true, Ordering::Relaxed),
            Err(_) => {}
        }
        result
    }

    /// Sleeps `d`, waking early when the work is cancelled.
    fn sleep(&self, d: Duration) {
        let step = Duration::from_millis(50);
        let mut left = d;
        while !left.is_zero() && !self.cancelled() {
            let s = left.min(step);
            std::thread::sleep(s);
            left -= s;
        }
    }
}

impl ObjectStore for Retrying {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn begin_upload(&self, key: &str, size_hint: Option<u64>) -> Result<String, CoreError> {
        self.noted(self.inner.begin_upload(key, size_hint))
    }
    fn upload_part(&self, token: &str, part: u32, data: &[u8]) -> Result<String, CoreError> {
        self.again("upload-part", || self.inner.upload_part(token, part, data))
    }
    fn finish_upload(&self, token: &str, receipts: &[String]) -> Result<ObjectInfo, CoreError> {
        self.noted(self.inner.finish_upload(token, receipts))
    }
    fn abort_upload(&self, token: &str) -> Result<(), CoreError> {
        self.again("abort-upload", || self.inner.abort_upload(token))
    }
    fn read(&self, key: &str, offset: u64, len: u32) -> Result<Vec<u8>, CoreError> {
        self.again("read", || self.inner.read(key, offset, len))
    }
    fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, CoreError> {
        self.again("stat", || self.inner.stat(key))
    }
    fn list(&self, prefix: &str, cursor: Option<&str>) -> Result<(Vec<ObjectInfo>, Option<String>), CoreError> {
        self.again("list", || self.inner.list(prefix, cursor))
    }
    fn delete(&self, key: &str) -> Result<(), CoreError> {
        self.again("delete", || self.inner.delete(key))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::Mutex;

    use super::*;
    use crate::remote::dir_store::DirStore;

    /// A store whose next `fail` requests fail with `error`.
    struct Flaky {
        inner: DirStore,
        fail: AtomicU32,
        error: fn() -> CoreError,
        calls: Mutex<Vec<&'static str>>,
    }

    impl Flaky {
        fn gate(&self, what: &'static str) -> Result<(), CoreError> {
            self.calls.lock().unwrap().push(what);
            if self
                .fail
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err((self.error)());
            }
            Ok(())
        }
    }

    impl ObjectStore for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn begin_upload(&self, key: &str, size_hint: Option<u64>) -> Result<String, CoreError> {
            self.gate("begin")?;
            self.inner.begin_upload(key, size_hint)
        }
        fn upload_part(&self, token: &str, part: u32, data: &[u8]) -> Result<String, CoreError> {
            self.gate("part")?;
            self.inner.upload_part(token, part, data)
        }
        fn finish_upload(&self, token: &str, receipts: &[String]) -> Result<ObjectInfo, CoreError> {
            self.gate("finish")?;
            self.inner.finish_upload(token, receipts)
        }
        fn abort_upload(&self, token: &str) -> Result<(), CoreError> {
            self.gate("abort")?;
            self.inner.abort_upload(token)
        }
        fn read(&self, key: &str, offset: u64, len: u32) -> Result<Vec<u8>, CoreError> {
            self.gate("read")?;
            self.inner.read(key, offset, len)
        }
        fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, CoreError> {
            self.gate("stat")?;
            self.inner.stat(key)
        }
        fn list(&self, prefix: &str, cursor: Option<&str>) -> Result<(Vec<ObjectInfo>, Option<String>), CoreError> {
            self.gate("list")?;
            self.inner.list(prefix, cursor)
        }
        fn delete(&self, key: &str) -> Result<(), CoreError> {
            self.gate("delete")?;
            self.inner.delete(key)
        }
    }

    fn flaky(dir: &std::path::Path, fail: u32, error: fn() -> CoreError) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: DirStore::new(dir),
            fail: AtomicU32::new(fail),
            error,
            calls: Mutex::default(),
        })
    }

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            first_pause: Duration::from_millis(1),
        }
    }

    fn put(store: &dyn ObjectStore, key: &str, data: &[u8]) {
        let t = store.begin_upload(key, Some(data.len() as u64)).unwrap();
        let r = store.upload_part(&t, 1, data).unwrap();
        store.finish_upload(&t, &[r]).unwrap();
    }

    #[test]
    fn transient_failures_of_repeatable_requests_are_retried() {
        let t = tempfile::tempdir().unwrap();
        let inner = flaky(t.path(), 0, || CoreError::Unavailable("503 slow down".into()));
        let store = Retrying::new(inner.clone(), quick(3), None);
        put(&store, "a/000001.wim", b"the object's bytes");
        inner.fail.store(2, Ordering::Relaxed);
        assert_eq!(store.read("a/000001.wim", 4, 6).unwrap(), b"object");
        assert_eq!(inner.calls.lock().unwrap().iter().filter(|c| **c == "read").count(), 3);
        // A part is sent again after a failure; the object is whole.
        inner.fail.store(0, Ordering::Relaxed);
        let token = store.begin_upload("a/000002.wim", None).unwrap();
        inner.fail.store(1, Ordering::Relaxed);
        let r = store.upload_part(&token, 1, b"second").unwrap();
        store.finish_upload(&token, &[r]).unwrap();
        assert_eq!(store.read("a/000002.wim", 0, 6).unwrap(), b"second");
    }

    #[test]
    fn attempts_are_bounded_and_the_error_says_so() {
        let t = tempfile::tempdir().unwrap();
        let inner = flaky(t.path(), 10, || CoreError::Unavailable("connection reset".into()));
        let store = Retrying::new(inner.clone(), quick(3), None);
        let e = store.stat("x").unwrap_err();
        assert!(
            matches!(&e, CoreError::Unavailable(m) if m.contains("connection reset") && m.contains("3 times")),
            "{e:?}"
        );
        assert_eq!(inner.calls.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_store_found_down_gets_one_attempt_per_request_until_it_answers() {
        let t = tempfile::tempdir().unwrap();
        let inner = flaky(t.path(), 0, || CoreError::Unavailable("connection refused".into()));
        let store = Retrying::new(inner.clone(), quick(3), None);
        let token = store.begin_upload("a/000001.wim", None).unwrap();
        inner.fail.store(100, Ordering::Relaxed);
        let e = store.upload_part(&token, 1, b"part").unwrap_err();
        assert!(
            matches!(&e, CoreError::Unavailable(m) if m.contains("3 times")),
            "{e:?}"
        );
        // The abort that follows is tried once, not three times more.
        assert!(store.abort_upload(&token).is_err());
        let calls = |what| inner.calls.lock().unwrap().iter().filter(|c| **c == what).count();
        assert_eq!((calls("part"), calls("abort")), (3, 1));
        // One answer and the store gets its full attempts again.
        inner.fail.store(0, Ordering::Relaxed);
        store.stat("a/000001.wim").unwrap();
        inner.fail.store(2, Ordering::Relaxed);
        store.abort_upload(&token).unwrap();
        assert_eq!(calls("abort"), 4);
        // A failed finish (never repeated) counts too.
        let token = store.begin_upload("a/000002.wim", None).unwrap();
        let r = store.upload_part(&token, 1, b"x").unwrap();
        inner.fail.store(100, Ordering::Relaxed);
        assert!(store.finish_upload(&token, &[r]).is_err());
        assert!(store.abort_upload(&token).is_err());
        assert_eq!(calls("abort"), 5);
    }

    #[test]
    fn lasting_failures_and_unrepeatable_requests_are_not_retried() {
        let t = tempfile::tempdir().unwrap();
        // A refusal is final: one attempt.
        let inner = flaky(t.path(), 10, || CoreError::PermissionDenied("403".into()));
        let store = Retrying::new(inner.clone(), quick(3), None);
        assert!(matches!(store.read("k", 0, 1), Err(CoreError::PermissionDenied(_))));
        assert_eq!(inner.calls.lock().unwrap().len(), 1);
        // Beginning and finishing an upload are never repeated.
        let inner = flaky(t.path(), 10, || CoreError::Unavailable("timeout".into()));
        let store = Retrying::new(inner.clone(), quick(3), None);
        assert!(store.begin_upload("k", None).is_err());
        assert!(store.finish_upload("0:k", &[]).is_err());
        assert_eq!(*inner.calls.lock().unwrap(), ["begin", "finish"]);
    }

    #[test]
    fn a_cancelled_job_does_not_retry() {
        let t = tempfile::tempdir().unwrap();
        let inner = flaky(t.path(), 10, || CoreError::Unavailable("timeout".into()));
        let cancel = Arc::new(AtomicBool::new(true));
        let store = Retrying::new(inner.clone(), RetryPolicy::default(), Some(cancel));
        assert!(store.list("", None).is_err());
        assert_eq!(inner.calls.lock().unwrap().len(), 1);
    }
}
