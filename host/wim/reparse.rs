//! Symbolic links as Windows reparse points, the way wimlib stores them.
//!
//! The blob holds only the reparse *data* (no 8-byte REPARSE_DATA_BUFFER
//! header): substitute-name offset/length, print-name offset/length, flags,
//! then the UTF-16LE path buffer. Separators are swapped (`/` <-> `\`) so
//! targets containing backslashes survive.

use super::error::{invalid, Result};

/// IO_REPARSE_TAG_SYMLINK.
pub const REPARSE_TAG_SYMLINK: u32 = 0xA000_000C;
/// IO_REPARSE_TAG_MOUNT_POINT (Windows junctions).
pub const REPARSE_TAG_MOUNT_POINT: u32 = 0xA000_0003;
/// Symlink data flag: the target is relative.
const SYMLINK_FLAG_RELATIVE: u32 = 1;
/// rp-flags bit in the dentry: the absolute target was *not* re-rooted.
pub const RP_NOT_FIXED: u16 = 0x0001;
/// Largest reparse data we produce or accept (Windows' limit).
pub const REPARSE_DATA_MAX: usize = 16 * 1024 - 8;

fn swap_separators(units: &mut [u16]) {
    for u in units {
        *u = match *u {
            0x2F => 0x5C,
            0x5C => 0x2F,
            other => other,
        };
    }
}

/// Encodes a Linux symlink target. `fixed_target` is the target already
/// re-rooted at the capture root (rpfix), when it pointed inside the tree.
/// Returns the reparse data and the rp-flags for the dentry.
pub fn encode_symlink(target: &str, fixed_target: Option<&str>) -> Result<(Vec<u8>, u16)> {
    let (text, rp_flags) = match fixed_target {
        Some(t) => (t, 0),
        None => (target, RP_NOT_FIXED),
    };
    let mut conv: Vec<u16> = text.encode_utf16().collect();
    swap_separators(&mut conv);
    let relative = !text.is_empty() && !text.starts_with('/');
    let (subst, print, flags) = if relative {
        (conv.clone(), conv, SYMLINK_FLAG_RELATIVE)
    } else {
        let mut s: Vec<u16> = "\\??\\C:".encode_utf16().collect();
        s.extend_from_slice(&conv);
        let mut p: Vec<u16> = "C:".encode_utf16().collect();
        p.extend_from_slice(&conv);
        (s, p, 0)
    };
    let sub_len = subst.len() * 2;
    let print_len = print.len() * 2;
    let total = 12 + sub_len + 2 + print_len + 2;
    if total > REPARSE_DATA_MAX {
        return invalid(format!("symlink target is too long ({} bytes) to store", target.len()));
    }
    let mut d = Vec::with_capacity(total);
    d.extend_from_slice(&0u16.to_le_bytes());
    d.extend_from_slice(&(sub_len as u16).to_le_bytes());
    d.extend_from_slice(&((sub_len + 2) as u16).to_le_bytes());
    d.extend_from_slice(&(print_len as u16).to_le_bytes());
    d.extend_from_slice(&flags.to_le_bytes());
    for u in subst.iter().chain(&[0]).chain(print.iter()).chain(&[0]) {
        d.extend_from_slice(&u.to_le_bytes());
    }
    Ok((d, rp_flags))
}

/// A decoded link target, before it is re-rooted for extraction.
#[derive(Debug, PartialEq, Eq)]
pub struct LinkTarget {
    /// Target with Linux separators.
    pub path: String,
    /// True for absolute targets that were re-rooted at capture (rpfix).
    pub fixed_absolute: bool,
}

/// Decodes a symlink or junction's reparse data into a Linux target.
pub fn decode_link(tag: u32, rp_flags: u16, data: &[u8]) -> Result<LinkTarget> {
    let header = match tag {
        REPARSE_TAG_SYMLINK => 12,
        REPARSE_TAG_MOUNT_POINT => 8,
        other => return invalid(format!("reparse point with tag {other:#x} is not a link")),
    };
    if data.len() < header {
        return invalid("reparse data is truncated");
    }
    let f = |i: usize| u16::from_le_bytes([data[i], data[i + 1]]) as usize;
    let (off, len) = (f(0), f(2));
    let relative =
        tag == REPARSE_TAG_SYMLINK && u32::from_le_bytes(data[8..12].try_into().unwrap()) & SYMLINK_FLAG_RELATIVE != 0;
    let buf = &data[header..];
    if off % 2 != 0 || len % 2 != 0 || off + len > buf.len() {
        return invalid("reparse data names a substitute name outside its buffer");
    }
    let mut units: Vec<u16> = buf[off..off + len]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    if !relative {
        // Drop an NT namespace prefix together with the drive component.
        let s = String::from_utf16_lossy(&units);
        for prefix in ["\\??\\", "\\DosDevices\\", "\\Device\\"] {
            if s.starts_with(prefix) {
                let rest = &units[prefix.len()..];
                let cut = rest.iter().position(|&u| u == 0x5C).unwrap_or(rest.len());
                units = rest[cut..].to_vec();
                break;
            }
        }
    }
    swap_separators(&mut units);
    let path = String::from_utf16(&units)
        .map_err(|_| super::error::WimError::Invalid("symlink target is not valid UTF-16".into()))?;
    Ok(LinkTarget {
        fixed_absolute: !relative && rp_flags & RP_NOT_FIXED == 0,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_wimlib() {
        assert_eq!(encode_symlink("a.txt", None).unwrap().0.len(), 36);
        assert_eq!(encode_symlink("/etc/passwd", None).unwrap().0.len(), 76);
        let (d, f) = encode_symlink("/srv/tree/dir1", Some("/dir1")).unwrap();
        assert_eq!((d.len(), f), (52, 0));
    }

    #[test]
    fn roundtrip() {
        for t in ["a.txt", "../x/y", "/etc/passwd", "back\\slash", "/", "dir/"] {
            let (d, f) = encode_symlink(t, None).unwrap();
            let l = decode_link(REPARSE_TAG_SYMLINK, f, &d).unwrap();
            assert_eq!(l.path, t);
            assert!(!l.fixed_absolute);
        }
        let (d, f) = encode_symlink("/r/dir1", Some("/dir1")).unwrap();
        assert_eq!(
            decode_link(REPARSE_TAG_SYMLINK, f, &d).unwrap(),
            LinkTarget {
                path: "/dir1".into(),
                fixed_absolute: true
            }
        );
    }
}
