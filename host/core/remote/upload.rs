//! Uploading one object: the parts a [`WimWriter`](crate::wim::WimWriter)
//! hands out go to the store on a worker thread (so compressing the next
//! part overlaps sending this one), one part at a time.
//!
//! A one-part object goes in a single request (`begin-upload` with its
//! exact size); bigger ones as a multipart upload begun when the first part
//! is ready, whose token is recorded at once so that a crash can abort it.

use std::collections::BTreeMap;
use std::io;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::{ObjectInfo, ObjectStore};
use crate::error::CoreError;
use crate::wim::storage::PartUpload;

/// Called with the token of a multipart upload as soon as it exists.
pub type OnToken = Box<dyn Fn(&str) + Send + Sync>;
/// Called with the bytes sent so far after each part.
pub type OnProgress = Box<dyn Fn(u64) + Send + Sync>;

#[derive(Default)]
struct State {
    token: Option<String>,
    receipts: BTreeMap<u32, String>,
    digests: BTreeMap<u32, [u8; 32]>,
    /// The first failure; later parts are not sent.
    error: Option<CoreError>,
    sent: u64,
}

struct Shared {
    store: Arc<dyn ObjectStore>,
    key: String,
    state: Mutex<State>,
    on_token: OnToken,
    on_progress: OnProgress,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, n: u32, data: &[u8], whole: Option<u64>) -> Result<(), CoreError> {
        let token = self.state().token.clone();
        let token = match token {
            Some(t) => t,
            None => {
                let t = self.store.begin_upload(&self.key, whole)?;
                if whole.is_none() {
                    (self.on_token)(&t);
                }
                self.state().token = Some(t.clone());
                t
            }
        };
        let receipt = self.store.upload_part(&token, n, data)?;
        let digest: [u8; 32] = Sha256::digest(data).into();
        let sent = {
            let mut st = self.state();
            st.receipts.insert(n, receipt);
            st.digests.insert(n, digest);
            st.sent += data.len() as u64;
            st.sent
        };
        (self.on_progress)(sent);
        Ok(())
    }
}

/// A part on its way: number, bytes, and the object's size when it is all of it.
type Part = (u32, Vec<u8>, Option<u64>);

/// The object being uploaded; implements [`PartUpload`] for the writer.
pub struct ObjectUpload {
    shared: Arc<Shared>,
    queue: Option<SyncSender<Part>>,
    worker: Option<JoinHandle<()>>,
    done: bool,
    /// Raised when an abandoned upload could not be aborted: its token
    /// must then be kept, so that it is aborted later.
    abort_failed: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// What a finished upload stored.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub info: ObjectInfo,
    /// Composite SHA-256 (see `RemoteObject::sha256`).
    pub sha256: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl ObjectUpload {
    pub fn new(store: Arc<dyn ObjectStore>, key: &str, on_token: OnToken, on_progress: OnProgress) -> ObjectUpload {
        let shared = Arc::new(Shared {
            store,
            key: key.to_string(),
            state: Mutex::new(State::default()),
            on_token,
            on_progress,
        });
        // A rendezvous: the writer waits until the worker takes a part, so
        // one part is in flight while the next is written, never more.
        let (tx, rx) = sync_channel::<Part>(0);
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name("upload".into())
            .spawn(move || {
                for (n, data, whole) in rx {
                    if s.state().error.is_some() {
                        continue; // drain: the writer learns of the failure at its next part
                    }
                    if let Err(e) = s.send(n, &data, whole) {
                        s.state().error = Some(e);
                    }
                }
            })
            .expect("spawning the upload thread");
        ObjectUpload {
            shared,
            queue: Some(tx),
            worker: Some(worker),
            done: false,
            abort_failed: None,
        }
    }

    /// Raises `flag` if the upload is dropped unfinished and cannot be
    /// aborted (the store is unreachable, say).
    pub fn report_abort_failure_to(&mut self, flag: Arc<std::sync::atomic::AtomicBool>) {
        self.abort_failed = Some(flag);
    }

    /// A handle for the writer (parts go through the same worker).
    pub fn parts(&self) -> Box<dyn PartUpload> {
        Box::new(PartSender {
            queue: self.queue.clone().expect("open"),
            shared: self.shared.clone(),
        })
    }

    fn stop_worker(&mut self) {
        self.queue = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }

    /// Waits for the parts in flight, then completes the upload of parts
    /// `1..=parts`. The object exists once this returns.
    pub fn finish(mut self, parts: u32) -> Result<Uploaded, CoreError> {
        self.stop_worker();
        let (token, receipts, digests) = {
            let mut st = self.shared.state();
            if let Some(e) = st.error.take() {
                return Err(e);
            }
            let token = st
                .token
                .clone()
                .ok_or_else(|| CoreError::Internal("the upload finished without any part".into()))?;
            let mut receipts = Vec::new();
            let mut digests = Vec::new();
            for n in 1..=parts {
                match (st.receipts.get(&n), st.digests.get(&n)) {
                    (Some(r), Some(d)) => {
                        receipts.push(r.clone());
                        digests.push(*d);
                    }
                    _ => return Err(CoreError::Internal(format!("part {n} of {parts} was never sent"))),
                }
            }
            (token, receipts, digests)
        };
        let info = self.shared.store.finish_upload(&token, &receipts)?;
        self.done = true;
        let sha256 = if digests.len() == 1 {
            hex(&digests[0])
        } else {
            let mut h = Sha256::new();
            for d in &digests {
                h.update(d);
            }
            format!("{}-{}", hex(&h.finalize()), digests.len())
        };
        Ok(Uploaded { info, sha256 })
    }

    /// Gives up: stops sending and aborts the upload (parts are freed).
    pub fn abort(mut self) -> Result<(), CoreError> {
        self.abort_inner()
    }

    fn abort_inner(&mut self) -> Result<(), CoreError> {
        self.stop_worker();
        self.done = true;
        let token = self.shared.state().token.clone();
        match token {
            Some(t) => self.shared.store.abort_upload(&t),
            None => Ok(()),
        }
    }
}

impl Drop for ObjectUpload {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.abort_inner() {
                tracing::warn!(key = %self.shared.key, "could not abort an abandoned upload: {e}");
                if let Some(flag) = &self.abort_failed {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    }
}

/// What the writer holds: sends parts to the worker.
struct PartSender {
    queue: SyncSender<Part>,
    shared: Arc<Shared>,
}

impl PartUpload for PartSender {
    fn put_part(&mut self, number: u32, data: Vec<u8>, whole: Option<u64>) -> io::Result<()> {
        if let Some(e) = &self.shared.state().error {
            return Err(io::Error::other(e.to_string()));
        }
        self.queue
            .send((number, data, whole))
            .map_err(|_| io::Error::other("the upload was stopped"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::dir_store::DirStore;

    #[test]
    fn one_part_goes_whole_and_many_parts_complete_in_order() {
        let t = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(DirStore::new(t.path()));
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let tk = tokens.clone();
        let up = ObjectUpload::new(
            store.clone(),
            "a/000001.wim",
            Box::new(move |t| tk.lock().unwrap().push(t.to_string())),
            Box::new(|_| {}),
        );
        let mut p = up.parts();
        p.put_part(1, b"hello".to_vec(), Some(5)).unwrap();
        drop(p);
        let done = up.finish(1).unwrap();
        assert_eq!(done.info.size, 5);
        assert_eq!(done.sha256.len(), 64);
        assert!(
            tokens.lock().unwrap().is_empty(),
            "a one-request upload has no token to record"
        );
        assert_eq!(std::fs::read(t.path().join("a/000001.wim")).unwrap(), b"hello");

        let tk = tokens.clone();
        let up = ObjectUpload::new(
            store.clone(),
            "a/000002.wim",
            Box::new(move |t| tk.lock().unwrap().push(t.to_string())),
            Box::new(|_| {}),
        );
        let mut p = up.parts();
        p.put_part(2, b"BB".to_vec(), None).unwrap();
        p.put_part(3, b"CC".to_vec(), None).unwrap();
        p.put_part(2, b"bb".to_vec(), None).unwrap(); // sent again: the later bytes count
        p.put_part(1, b"aa".to_vec(), None).unwrap();
        drop(p);
        let done = up.finish(2).unwrap();
        assert!(done.sha256.ends_with("-2"));
        assert_eq!(tokens.lock().unwrap().len(), 1);
        assert_eq!(std::fs::read(t.path().join("a/000002.wim")).unwrap(), b"aabb");
    }

    #[test]
    fn an_upload_dropped_unfinished_is_aborted() {
        let t = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(DirStore::new(t.path()));
        let up = ObjectUpload::new(store, "a/000001.wim", Box::new(|_| {}), Box::new(|_| {}));
        let mut p = up.parts();
        p.put_part(2, b"x".to_vec(), None).unwrap();
        drop(p);
        drop(up);
        assert_eq!(std::fs::read_dir(t.path().join(".uploads")).unwrap().count(), 0);
        assert!(!t.path().join("a/000001.wim").exists());
    }
}
