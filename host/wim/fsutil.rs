//! Thin, safe wrappers over the Linux calls std does not offer: xattrs,
//! mknod, lchown-free time setting on symlinks, and opens of source files
//! and directories that neither block nor follow what was swapped in.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Lists a file's extended attributes without following symlinks.
pub fn list_xattrs(p: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cpath(p)?;
    let mut out = read_xattrs(
        // SAFETY: the buffer pointer and length describe a live buffer.
        |buf| unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
        // SAFETY: as above.
        |name, buf| unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
    )?;
    out.sort();
    Ok(out)
}

/// The extended attributes `list` names (a listxattr call into the buffer)
/// and `get` reads (a getxattr call for the name into the buffer).
fn read_xattrs(
    list: impl Fn(&mut [u8]) -> isize,
    get: impl Fn(&CString, &mut [u8]) -> isize,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        let n = list(&mut names);
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("split on NUL");
        let mut val = vec![0u8; 256];
        loop {
            let n = get(&cname, &mut val);
            if n >= 0 {
                val.truncate(n as usize);
                out.push((name.to_vec(), val));
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) if val.len() < (1 << 20) => val.resize(val.len() * 4, 0),
                Some(libc::ENODATA) => break, // removed meanwhile
                _ => return Err(e),
            }
        }
    }
    Ok(out)
}

/// Where writing `path` really lands: the path with every symbolic link
/// at its end followed (the target need not exist yet). A file replaced by
/// rename must be replaced there, or the link would be replaced instead.
pub fn final_target(path: &Path) -> io::Result<std::path::PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let t = std::fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) if t.is_relative() => dir.join(t),
                    _ => t,
                };
            }
            Ok(_) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: too many levels of symbolic links", path.display()),
    ))
}

/// The one name of the file at `path`: symbolic links to it followed
/// ([`final_target`]) and its directory canonicalized, so every spelling
/// of an archive's path (a link, `..`, a linked directory) gives the same.
/// Parts that cannot be resolved (a directory that does not exist) stay as
/// given.
pub fn real_file_path(path: &Path) -> std::path::PathBuf {
    let target = final_target(path).unwrap_or_else(|_| path.to_path_buf());
    match (target.parent(), target.file_name()) {
        (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => {
            std::fs::canonicalize(dir).map_or_else(|_| target.clone(), |d| d.join(name))
        }
        _ => target,
    }
}

/// Gives `to` the permission bits, owner and extended attributes of `from`
/// (a rebuilt archive replacing the old one keeps what was set on it).
/// The owner is kept only where we may set it (root, or our own file).
pub fn copy_file_attributes(from: &File, to: &File) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = from.metadata()?;
    // SAFETY: both descriptors are open for the calls.
    if unsafe { libc::fchown(to.as_raw_fd(), m.uid(), m.gid()) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(e);
        }
    }
    // After the owner: chown clears the set-id bits.
    // SAFETY: as above.
    if unsafe { libc::fchmod(to.as_raw_fd(), m.mode() & 0o7777) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for (name, value) in flist_xattrs(from)? {
        match fset_xattr(to, &name, &value) {
            Ok(()) => {}
            // Names we may not set (trusted.* as a user) stay behind.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTSUP)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An open file's extended attributes.
fn flist_xattrs(f: &File) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let fd = f.as_raw_fd();
    read_xattrs(
        // SAFETY: the descriptor is open; the buffer pointer and length describe a live buffer.
        |buf| unsafe { libc::flistxattr(fd, buf.as_mut_ptr().cast(), buf.len()) },
        // SAFETY: as above.
        |name, buf| unsafe { libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
    )
}

/// Sets one extended attribute without following symlinks.
pub fn set_xattr(p: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(p)?;
    let n = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: pointers and lengths describe live buffers.
    let rc = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets an extended attribute on an open file.
pub fn fset_xattr(f: &File, name: &[u8], value: &[u8]) -> io::Result<()> {
    let n = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: the descriptor is open for the call; pointers and lengths describe live buffers.
    let rc = unsafe { libc::fsetxattr(f.as_raw_fd(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets atime and mtime (nanoseconds) of an open file.
pub fn fset_times(f: &File, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let ts = timespecs(atime, mtime);
    // SAFETY: the descriptor is open for the call; `ts` is a valid array of two timespecs.
    let rc = unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn timespecs(atime: (i64, i64), mtime: (i64, i64)) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: atime.0 as libc::time_t,
            tv_nsec: atime.1 as _,
        },
        libc::timespec {
            tv_sec: mtime.0 as libc::time_t,
            tv_nsec: mtime.1 as _,
        },
    ]
}

/// Creates a FIFO, socket or device node.
pub fn mknod(p: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cpath(p)?;
    // SAFETY: plain syscall on a valid C string.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets atime and mtime (nanoseconds) without following symlinks.
pub fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let c = cpath(p)?;
    let ts = timespecs(atime, mtime);
    // SAFETY: `ts` is a valid array of two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What a source path turned out to be when opened for reading.
#[derive(Debug)]
pub enum SourceOpen {
    /// The regular file that was listed, open for (blocking) reads.
    File(File),
    /// No longer the regular file that was listed: what happened to it,
    /// e.g. "became a FIFO" (fits "PATH: … since it was listed").
    Changed(String),
}

fn kind_of(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symbolic link",
        _ => "something other than a regular file",
    }
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: `st` is written by fstat before it is read; the fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0 {
        Ok(st)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// open(2), retried on EINTR, first with O_NOATIME (refused with EPERM
/// unless we own the file or are privileged).
fn open_raw(c: &CString, flags: libc::c_int) -> io::Result<OwnedFd> {
    open_raw_with(c, flags).map(|(fd, _)| fd)
}

/// [`open_raw`], also returning the flags the file was opened with (with
/// or without O_NOATIME).
fn open_raw_with(c: &CString, flags: libc::c_int) -> io::Result<(OwnedFd, libc::c_int)> {
    let mut flags = flags | libc::O_NOATIME;
    loop {
        // SAFETY: plain syscall on a valid C string.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: `fd` was just opened and nothing else owns it.
            return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, flags));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EPERM) if flags & libc::O_NOATIME != 0 => flags &= !libc::O_NOATIME,
            _ => return Err(e),
        }
    }
}

/// Checks that an open fd is still the regular file listed as `listed`
/// (device, inode). Content read from another inode would be stored under
/// the listed file's owner and mode, so a swap is refused, not followed.
fn check_listed(fd: &OwnedFd, listed: (u64, u64)) -> io::Result<Option<String>> {
    let st = fstat(fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(Some(format!("became {}", kind_of(st.st_mode))));
    }
    if (st.st_dev, st.st_ino) != listed {
        return Ok(Some("was replaced by a different file".into()));
    }
    Ok(None)
}

/// Opens a source file that was listed as a regular file with identity
/// `listed` (device, inode), without following a symlink and without
/// blocking: a FIFO, device or symlink swapped in after the listing would
/// otherwise hang the backup in open(2) (FIFO, tape, tty) or read
/// something outside the tree. Tries O_NOATIME first.
pub fn open_source_file(p: &Path, listed: (u64, u64)) -> io::Result<SourceOpen> {
    let c = cpath(p)?;
    let base = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let (fd, opened_with) = match open_raw_with(&c, base | libc::O_NONBLOCK) {
        Ok(opened) => opened,
        Err(e) => match e.raw_os_error() {
            // O_NOFOLLOW's answer for a symlink in the last component.
            Some(libc::ELOOP) => return Ok(SourceOpen::Changed("became a symbolic link".into())),
            // A socket cannot be opened; name what is there now.
            Some(libc::ENXIO) => {
                let what = std::fs::symlink_metadata(p)
                    .map(|m| kind_of(std::os::unix::fs::MetadataExt::mode(&m) as libc::mode_t))
                    .unwrap_or("a socket or device");
                return Ok(SourceOpen::Changed(format!("became {what}")));
            }
            // A lease held by another process (Samba, NFS server): the
            // non-blocking open started the break; wait for it on the
            // very inode we checked, which is regular, so the wait is
            // bounded by the kernel's lease-break-time.
            Some(libc::EWOULDBLOCK) => return open_leased(p, &c, listed),
            _ => return Err(e),
        },
    };
    if let Some(why) = check_listed(&fd, listed)? {
        return Ok(SourceOpen::Changed(why));
    }
    // Regular files ignore O_NONBLOCK, but reads should not depend on that.
    // F_SETFL sets only the status flags (O_NOATIME, O_NONBLOCK, …), and we
    // know which we opened with: no F_GETFL first (a syscall per file).
    // SAFETY: fcntl on an fd we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, opened_with & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(SourceOpen::File(File::from(fd)))
}

fn open_leased(p: &Path, c: &CString, listed: (u64, u64)) -> io::Result<SourceOpen> {
    // O_PATH opens nothing (no lease break, no FIFO or device open).
    let path_fd = open_raw(c, libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)?;
    if let Some(why) = check_listed(&path_fd, listed)? {
        return Ok(SourceOpen::Changed(why));
    }
    // Reopen that inode through its /proc magic link (followed on purpose).
    let proc = CString::new(format!("/proc/self/fd/{}", path_fd.as_raw_fd())).expect("no NUL");
    let fd = open_raw(&proc, libc::O_RDONLY | libc::O_CLOEXEC).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{}: held by a lease and cannot be reopened through /proc ({e}); is /proc mounted?",
                p.display()
            ),
        )
    })?;
    if let Some(why) = check_listed(&fd, listed)? {
        return Ok(SourceOpen::Changed(why));
    }
    Ok(SourceOpen::File(File::from(fd)))
}

/// Opens a source directory listed with identity `listed` (device, inode)
/// and returns its entry names, without blocking on or following whatever
/// was swapped in since (`follow` only for the source root, which may be a
/// symlink the user named). Err(why) as in `SourceOpen::Changed`.
pub fn list_source_dir(
    p: &Path,
    listed: (u64, u64),
    follow: bool,
) -> io::Result<std::result::Result<Vec<OsString>, String>> {
    let c = cpath(p)?;
    let mut flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let fd = match open_raw(&c, flags) {
        Ok(fd) => fd,
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::ELOOP) => Ok(Err("became a symbolic link".into())),
                Some(libc::ENOTDIR) => {
                    let what = std::fs::symlink_metadata(p)
                        .map(|m| kind_of(std::os::unix::fs::MetadataExt::mode(&m) as libc::mode_t))
                        .unwrap_or("something other than a directory");
                    Ok(Err(format!("became {what}")))
                }
                _ => Err(e),
            }
        }
    };
    let st = fstat(&fd)?;
    if (st.st_dev, st.st_ino) != listed {
        return Ok(Err("was replaced by a different directory".into()));
    }
    // SAFETY: fdopendir takes ownership of the fd (closedir closes it).
    let dir = unsafe { libc::fdopendir(fd.into_raw_fd()) };
    if dir.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut names = Vec::new();
    let result = loop {
        // errno tells the end of the directory from an error.
        // SAFETY: `dir` is a live DIR*; the entry is copied before the next call.
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir64(dir) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error().unwrap_or(0) == 0 {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: d_name is NUL-terminated inside the entry.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b != b"." && b != b".." {
            names.push(OsStr::from_bytes(b).to_os_string());
        }
    };
    // SAFETY: `dir` is live and not used after this.
    unsafe { libc::closedir(dir) };
    result.map(|()| Ok(names))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A path's bytes as UTF-8, or None.
pub fn utf8_name(n: &OsStr) -> Option<&str> {
    std::str::from_utf8(n.as_bytes()).ok()
}

#[cfg(test)]
mod source_open_tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    fn id(p: &Path) -> (u64, u64) {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.dev(), m.ino())
    }

    /// A regular file's identity, then the path replaced by `swap`.
    fn listed_then(p: &Path, swap: impl FnOnce(&Path)) -> (u64, u64) {
        std::fs::write(p, b"listed").unwrap();
        let listed = id(p);
        std::fs::remove_file(p).unwrap();
        swap(p);
        listed
    }

    fn changed(p: &Path, listed: (u64, u64)) -> String {
        match open_source_file(p, listed).unwrap() {
            SourceOpen::Changed(why) => why,
            SourceOpen::File(_) => panic!("{} opened as the listed regular file", p.display()),
        }
    }

    #[test]
    fn regular_file_opens_blocking_with_its_content() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let SourceOpen::File(mut f) = open_source_file(&p, id(&p)).unwrap() else {
            panic!("a regular file was refused")
        };
        // SAFETY: F_GETFL on an open fd.
        let fl = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(fl & libc::O_NONBLOCK, 0, "O_NONBLOCK left set");
        // Our own file: O_NOATIME is allowed, and clearing O_NONBLOCK keeps it.
        assert_ne!(fl & libc::O_NOATIME, 0, "O_NOATIME dropped");
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
    }

    #[test]
    fn fifo_swapped_in_is_refused_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let listed = listed_then(&p, |p| mknod(p, libc::S_IFIFO | 0o644, 0).unwrap());
        // With a plain open this call would wait for a writer forever.
        assert_eq!(changed(&p, listed), "became a FIFO");
        // Even with the FIFO's own identity: it is not a regular file.
        assert_eq!(changed(&p, id(&p)), "became a FIFO");
    }

    #[test]
    fn device_is_refused() {
        let dev = Path::new("/dev/null");
        assert_eq!(changed(dev, id(dev)), "became a character device");
    }

    #[test]
    fn symlink_swapped_in_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("fifo");
        mknod(&fifo, libc::S_IFIFO | 0o644, 0).unwrap();
        for target in [fifo.as_path(), Path::new("/dev/zero"), Path::new("/etc/hostname")] {
            let p = t.path().join("f");
            let listed = listed_then(&p, |p| std::os::unix::fs::symlink(target, p).unwrap());
            assert_eq!(changed(&p, listed), "became a symbolic link", "-> {}", target.display());
            std::fs::remove_file(&p).unwrap();
        }
    }

    #[test]
    fn directory_and_socket_swapped_in_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let listed = listed_then(&p, |p| std::fs::create_dir(p).unwrap());
        assert_eq!(changed(&p, listed), "became a directory");
        let s = t.path().join("s");
        let listed = listed_then(&s, |s| {
            std::os::unix::net::UnixListener::bind(s).unwrap();
        });
        assert_eq!(changed(&s, listed), "became a socket");
    }

    #[test]
    fn another_inode_swapped_in_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"listed").unwrap();
        let listed = id(&p);
        let other = t.path().join("other");
        std::fs::write(&other, b"not what was listed").unwrap();
        std::fs::rename(&other, &p).unwrap();
        assert_eq!(changed(&p, listed), "was replaced by a different file");
    }

    #[test]
    fn leased_file_is_read_after_the_break() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"leased").unwrap();
        let holder = std::fs::File::open(&p).unwrap();
        // SAFETY: fcntl on an open fd. SIGWINCH is ignored by default, so
        // the break notice does not kill the test process.
        unsafe {
            const F_SETSIG: libc::c_int = 10; // <linux/fcntl.h>; not in the libc crate
            libc::fcntl(holder.as_raw_fd(), F_SETSIG, libc::SIGWINCH);
            if libc::fcntl(holder.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) != 0 {
                eprintln!("SKIP: leases unavailable here: {}", io::Error::last_os_error());
                return;
            }
        }
        let listed = id(&p);
        let q = p.clone();
        let opener = std::thread::spawn(move || open_source_file(&q, listed));
        // The open breaks the lease (F_GETLEASE then reports the downgrade).
        while unsafe { libc::fcntl(holder.as_raw_fd(), libc::F_GETLEASE) } == libc::F_WRLCK {
            std::thread::yield_now();
        }
        // SAFETY: as above.
        unsafe { libc::fcntl(holder.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
        let SourceOpen::File(mut f) = opener.join().unwrap().unwrap() else {
            panic!("the leased regular file was refused")
        };
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "leased");
    }

    #[test]
    fn directory_listing_refuses_swaps() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("x"), b"").unwrap();
        let listed = id(&d);
        assert_eq!(
            list_source_dir(&d, listed, false).unwrap(),
            Ok(vec![OsString::from("x")])
        );
        // The root may be a symlink the user named; other directories not.
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert_eq!(
            list_source_dir(&link, listed, true).unwrap(),
            Ok(vec![OsString::from("x")])
        );
        assert_eq!(
            list_source_dir(&link, listed, false).unwrap(),
            Err("became a symbolic link".into())
        );
        let gone = t.path().join("gone");
        std::fs::rename(&d, &gone).unwrap();
        mknod(&d, libc::S_IFIFO | 0o644, 0).unwrap();
        assert_eq!(list_source_dir(&d, listed, false).unwrap(), Err("became a FIFO".into()));
        std::fs::remove_file(&d).unwrap();
        std::fs::create_dir(&d).unwrap();
        assert_eq!(
            list_source_dir(&d, listed, false).unwrap(),
            Err("was replaced by a different directory".into())
        );
    }
}
