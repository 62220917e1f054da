//! A directory standing in for object storage in unit tests of the remote
//! core (the daemon's tests use a real S3 server and the real plugin).
//! Multipart uploads keep their parts in a staging directory; completing
//! one refuses an existing key, as the plugin contract requires.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ObjectInfo, ObjectStore};
use crate::error::CoreError;

pub struct DirStore {
    root: PathBuf,
    seq: AtomicU64,
    /// GET requests served (ranged reads).
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
}

fn io(e: std::io::Error) -> CoreError {
    CoreError::Internal(e.to_string())
}

impl DirStore {
    pub fn new(root: &Path) -> DirStore {
        fs::create_dir_all(root.join(".uploads")).unwrap();
        DirStore {
            root: root.to_path_buf(),
            seq: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
        }
    }
    /// Where object `key` lives.
    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

impl ObjectStore for DirStore {
    fn name(&self) -> &str {
        "dir-store"
    }
    fn begin_upload(&self, key: &str, _size_hint: Option<u64>) -> Result<String, CoreError> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let token = format!("{n}:{key}");
        fs::create_dir_all(self.root.join(".uploads").join(n.to_string())).map_err(io)?;
        Ok(token)
    }
    fn upload_part(&self, token: &str, part: u32, data: &[u8]) -> Result<String, CoreError> {
        let (n, _) = token.split_once(':').unwrap();
        fs::write(self.root.join(".uploads").join(n).join(part.to_string()), data).map_err(io)?;
        Ok(format!("etag-{part}-{}", data.len()))
    }
    fn finish_upload(&self, token: &str, receipts: &[String]) -> Result<ObjectInfo, CoreError> {
        let (n, key) = token.split_once(':').unwrap();
        let dir = self.root.join(".uploads").join(n);
        let mut all = Vec::new();
        for (i, r) in receipts.iter().enumerate() {
            let part = fs::read(dir.join((i + 1).to_string())).map_err(io)?;
            assert_eq!(*r, format!("etag-{}-{}", i + 1, part.len()), "receipts out of order");
            all.extend(part);
        }
        let p = self.path(key);
        if p.exists() {
            return Err(CoreError::FailedPrecondition(format!("{key} already exists")));
        }
        fs::create_dir_all(p.parent().unwrap()).map_err(io)?;
        fs::write(&p, &all).map_err(io)?;
        fs::remove_dir_all(dir).map_err(io)?;
        Ok(ObjectInfo {
            key: key.into(),
            size: all.len() as u64,
            etag: Some(format!("\"{n}\"")),
        })
    }
    fn abort_upload(&self, token: &str) -> Result<(), CoreError> {
        if let Some((n, _)) = token.split_once(':') {
            let _ = fs::remove_dir_all(self.root.join(".uploads").join(n));
        }
        Ok(())
    }
    fn read(&self, key: &str, offset: u64, len: u32) -> Result<Vec<u8>, CoreError> {
        let data = fs::read(self.path(key)).map_err(|_| CoreError::NotFound(format!("{key} does not exist")))?;
        let start = (offset as usize).min(data.len());
        let end = (start + len as usize).min(data.len());
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add((end - start) as u64, Ordering::Relaxed);
        Ok(data[start..end].to_vec())
    }
    fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, CoreError> {
        Ok(fs::metadata(self.path(key)).ok().map(|m| ObjectInfo {
            key: key.into(),
            size: m.len(),
            etag: None,
        }))
    }
    fn list(&self, prefix: &str, _cursor: Option<&str>) -> Result<(Vec<ObjectInfo>, Option<String>), CoreError> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).map_err(io)? {
                let p = e.map_err(io)?.path();
                let key = p.strip_prefix(&self.root).unwrap().display().to_string();
                if key.starts_with(".uploads") {
                    continue;
                }
                if p.is_dir() {
                    stack.push(p);
                } else if key.starts_with(prefix) {
                    out.push(ObjectInfo {
                        size: fs::metadata(&p).map_err(io)?.len(),
                        key,
                        etag: None,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((out, None))
    }
    fn delete(&self, key: &str) -> Result<(), CoreError> {
        let _ = fs::remove_file(self.path(key));
        Ok(())
    }
}
