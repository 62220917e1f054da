//! The security data block at the start of every metadata resource.
//!
//! Layout: total length (u32), descriptor count n (u32), n u64 sizes, the
//! descriptors, zero padding to 8. Linux captures carry no descriptors, so
//! we write the empty 8-byte block and keep Windows blocks as opaque bytes.

use super::error::{invalid, Le, Result};

/// Parses the block; returns (raw bytes up to the stated length, number of
/// descriptors, offset of the root dentry).
pub fn parse(buf: &[u8]) -> Result<(Vec<u8>, u32, usize)> {
    let le = Le(buf);
    let what = "security data";
    let mut total = le.u32(0, what)? as u64;
    let count = le.u32(4, what)? as u64;
    if total == 0 {
        total = 8;
    }
    let min = 8 + 8 * count;
    if total < min || total > buf.len() as u64 {
        return invalid(format!(
            "security data length {total} does not fit {count} descriptors in a {}-byte resource",
            buf.len()
        ));
    }
    let mut sum = min;
    for i in 0..count as usize {
        sum = sum.saturating_add(le.u64(8 + 8 * i, what)?);
    }
    if sum > total {
        return invalid("security descriptor sizes exceed the security data length");
    }
    let root = ((total + 7) & !7) as usize;
    Ok((buf[..total as usize].to_vec(), count as u32, root))
}

/// The block of an image without security descriptors.
pub fn empty() -> Vec<u8> {
    vec![8, 0, 0, 0, 0, 0, 0, 0]
}
