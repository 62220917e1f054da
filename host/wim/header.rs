//! The 208-byte file header at offset 0.
//!
//! The structure is packed: the integrity locator sits at the 4-aligned
//! offset 0x7C, so we (de)serialize field by field, never through a struct cast.

use super::error::{invalid, Le, Result, WimError};
use super::reshdr::ResHdr;

pub const HEADER_SIZE: usize = 208;
/// `MSWIM\0\0\0`: an ordinary WIM.
pub const WIM_MAGIC: [u8; 8] = *b"MSWIM\0\0\0";
/// `WLPWM\0\0\0`: wimlib's pipable variant, which we only recognise to refuse.
pub const PIPABLE_MAGIC: [u8; 8] = *b"WLPWM\0\0\0";
/// Version of every ordinary WIM.
pub const VERSION_DEFAULT: u32 = 0x0001_0D00;
/// Version of WIMs that may hold solid (LZMS, "ESD") resources.
pub const VERSION_SOLID: u32 = 0x0000_0E00;

/// Compressed resources may exist; one COMPRESS_* bit names the codec.
pub const HDR_FLAG_COMPRESSION: u32 = 0x0000_0002;
/// Tools must not modify the file.
pub const HDR_FLAG_READONLY: u32 = 0x0000_0004;
/// Part of a split WIM.
pub const HDR_FLAG_SPANNED: u32 = 0x0000_0008;
/// A writer is modifying the file (set before, cleared by the final header write).
pub const HDR_FLAG_WRITE_IN_PROGRESS: u32 = 0x0000_0040;
/// Absolute symlinks into the captured tree were stored relative to its root.
pub const HDR_FLAG_RP_FIX: u32 = 0x0000_0080;
pub const HDR_FLAG_COMPRESS_XPRESS: u32 = 0x0002_0000;
pub const HDR_FLAG_COMPRESS_LZX: u32 = 0x0004_0000;
pub const HDR_FLAG_COMPRESS_LZMS: u32 = 0x0008_0000;
/// Seen in some Microsoft files; read as XPRESS, never written.
pub const HDR_FLAG_COMPRESS_XPRESS_2: u32 = 0x0020_0000;
/// Reserved by Microsoft and never set by wimlib or Windows. WimGuard sets it
/// (alone) for archives compressed by a codec plugin; the codec's id is in the
/// XML (`<WIM><WIMGUARDCODEC>`). wimlib refuses such files ("unknown
/// compression type"), which is right: it cannot decode them.
pub const HDR_FLAG_COMPRESS_PLUGIN: u32 = 0x0001_0000;

/// The WIM-wide compression type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Xpress,
    Lzx,
    Lzms,
    /// A WimGuard codec plugin, named by the XML (see [`HDR_FLAG_COMPRESS_PLUGIN`]).
    Plugin,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xpress => "xpress",
            Compression::Lzx => "lzx",
            Compression::Lzms => "lzms",
            Compression::Plugin => "plugin",
        }
    }

    /// The standard codec a user names (`none`, `xpress`, `lzx`); None for
    /// any other name (LZMS is read, never written; plugins have their own).
    pub fn from_standard_name(name: &str) -> Option<Compression> {
        match name {
            "none" => Some(Compression::None),
            "xpress" => Some(Compression::Xpress),
            "lzx" => Some(Compression::Lzx),
            _ => None,
        }
    }

    /// Accepted chunk sizes (powers of two) for this codec, as wimlib accepts them.
    pub fn chunk_size_range(self) -> (u32, u32) {
        match self {
            Compression::None => (0, 0),
            Compression::Xpress => (1 << 12, 1 << 16),
            Compression::Lzx => (1 << 15, 1 << 21),
            Compression::Lzms => (1 << 15, 1 << 30),
            Compression::Plugin => (1 << 12, 1 << 21),
        }
    }

    fn flag(self) -> u32 {
        match self {
            Compression::None => 0,
            Compression::Xpress => HDR_FLAG_COMPRESS_XPRESS,
            Compression::Lzx => HDR_FLAG_COMPRESS_LZX,
            Compression::Lzms => HDR_FLAG_COMPRESS_LZMS,
            Compression::Plugin => HDR_FLAG_COMPRESS_PLUGIN,
        }
    }
}

/// The parsed file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// VERSION_DEFAULT or VERSION_SOLID.
    pub version: u32,
    /// HDR_FLAG_* bits, including the compression bits.
    pub flags: u32,
    /// Uncompressed bytes per chunk of non-solid compressed resources; 0 when uncompressed.
    pub chunk_size: u32,
    /// Identifies this WIM (random; kept across rewrites).
    pub guid: [u8; 16],
    /// 1-based part number and the number of parts (1 and 1 unless split).
    pub part_number: u16,
    pub total_parts: u16,
    /// Number of images; equals the number of IMAGE elements in the XML.
    pub image_count: u32,
    /// Locators of the blob table, the XML data and the bootable image's metadata.
    pub blob_table: ResHdr,
    pub xml: ResHdr,
    pub boot_metadata: ResHdr,
    /// 1-based bootable image, 0 for none.
    pub boot_index: u32,
    /// Locator of the integrity table, or all zero.
    pub integrity: ResHdr,
}

impl Header {
    /// A header for a new, empty WIM.
    pub fn new(compression: Compression, chunk_size: u32, guid: [u8; 16]) -> Header {
        let mut flags = HDR_FLAG_RP_FIX;
        if compression != Compression::None {
            flags |= HDR_FLAG_COMPRESSION | compression.flag();
        }
        Header {
            version: VERSION_DEFAULT,
            flags,
            chunk_size: if compression == Compression::None {
                0
            } else {
                chunk_size
            },
            guid,
            part_number: 1,
            total_parts: 1,
            image_count: 0,
            blob_table: ResHdr::default(),
            xml: ResHdr::default(),
            boot_metadata: ResHdr::default(),
            boot_index: 0,
            integrity: ResHdr::default(),
        }
    }

    /// Parses and validates a header the way wimlib does, so that a file we
    /// accept is one wimlib accepts too.
    pub fn parse(b: &[u8]) -> Result<Header> {
        if b.len() < HEADER_SIZE {
            return invalid(format!(
                "file is only {} bytes, shorter than a WIM header (208)",
                b.len()
            ));
        }
        let magic: [u8; 8] = b[0..8].try_into().unwrap();
        if magic == PIPABLE_MAGIC {
            return Err(WimError::Unsupported(
                "pipable WIM (wimlib --pipable); convert it with `wimlib-imagex optimize WIM --not-pipable`".into(),
            ));
        }
        if magic != WIM_MAGIC {
            return invalid("not a WIM file (bad magic)");
        }
        let le = Le(b);
        let h = "header";
        let header_size = le.u32(8, h)?;
        if header_size as usize != HEADER_SIZE {
            return invalid(format!("header size is {header_size}, expected 208"));
        }
        let hdr = Header {
            version: le.u32(12, h)?,
            flags: le.u32(16, h)?,
            chunk_size: le.u32(20, h)?,
            guid: b[24..40].try_into().unwrap(),
            part_number: le.u16(40, h)?,
            total_parts: le.u16(42, h)?,
            image_count: le.u32(44, h)?,
            blob_table: ResHdr::parse(&b[48..72], h)?,
            xml: ResHdr::parse(&b[72..96], h)?,
            boot_metadata: ResHdr::parse(&b[96..120], h)?,
            boot_index: le.u32(120, h)?,
            integrity: ResHdr::parse(&b[124..148], h)?,
        };
        if hdr.version != VERSION_DEFAULT && hdr.version != VERSION_SOLID {
            return Err(WimError::Unsupported(format!("WIM version {:#x}", hdr.version)));
        }
        if hdr.total_parts != 1 || hdr.part_number != 1 || hdr.flags & HDR_FLAG_SPANNED != 0 {
            if hdr.total_parts == 0 || hdr.part_number == 0 || hdr.part_number > hdr.total_parts {
                return invalid(format!("part {} of {} is impossible", hdr.part_number, hdr.total_parts));
            }
            return Err(WimError::Unsupported(format!(
                "split WIM (part {} of {}); join it with `wimlib-imagex join`",
                hdr.part_number, hdr.total_parts
            )));
        }
        let comp = hdr.compression()?;
        let (min, max) = comp.chunk_size_range();
        if comp == Compression::None {
            if hdr.chunk_size != 0 {
                return invalid(format!(
                    "chunk size {} for an uncompressed WIM (must be 0)",
                    hdr.chunk_size
                ));
            }
        } else if !hdr.chunk_size.is_power_of_two() || hdr.chunk_size < min || hdr.chunk_size > max {
            return invalid(format!("invalid chunk size {} for {}", hdr.chunk_size, comp.name()));
        }
        if hdr.blob_table.original_size == 0 && hdr.xml.original_size == 0 {
            return invalid("WIM is incomplete (no blob table and no XML)");
        }
        Ok(hdr)
    }

    /// The WIM-wide codec named by the flags.
    pub fn compression(&self) -> Result<Compression> {
        if self.flags & HDR_FLAG_COMPRESSION == 0 {
            return Ok(Compression::None);
        }
        // Same precedence as wimlib when several bits are set.
        if self.flags & HDR_FLAG_COMPRESS_LZX != 0 {
            Ok(Compression::Lzx)
        } else if self.flags & (HDR_FLAG_COMPRESS_XPRESS | HDR_FLAG_COMPRESS_XPRESS_2) != 0 {
            Ok(Compression::Xpress)
        } else if self.flags & HDR_FLAG_COMPRESS_LZMS != 0 {
            Ok(Compression::Lzms)
        } else if self.flags & HDR_FLAG_COMPRESS_PLUGIN != 0 {
            Ok(Compression::Plugin)
        } else {
            invalid("compression flag set but no codec named")
        }
    }

    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut v = Vec::with_capacity(HEADER_SIZE);
        v.extend_from_slice(&WIM_MAGIC);
        v.extend_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        v.extend_from_slice(&self.version.to_le_bytes());
        v.extend_from_slice(&self.flags.to_le_bytes());
        v.extend_from_slice(&self.chunk_size.to_le_bytes());
        v.extend_from_slice(&self.guid);
        v.extend_from_slice(&self.part_number.to_le_bytes());
        v.extend_from_slice(&self.total_parts.to_le_bytes());
        v.extend_from_slice(&self.image_count.to_le_bytes());
        self.blob_table.write(&mut v);
        self.xml.write(&mut v);
        self.boot_metadata.write(&mut v);
        v.extend_from_slice(&self.boot_index.to_le_bytes());
        self.integrity.write(&mut v);
        v.resize(HEADER_SIZE, 0);
        v.try_into().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_packed_integrity_offset() {
        let mut h = Header::new(Compression::Lzx, 32768, [7; 16]);
        h.image_count = 2;
        h.xml = ResHdr {
            size_in_wim: 10,
            flags: 2,
            offset: 300,
            original_size: 10,
        };
        h.integrity = ResHdr {
            size_in_wim: 32,
            flags: 0,
            offset: 310,
            original_size: 32,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0x7C..0x7D], &[32]);
        assert_eq!(u32::from_le_bytes(b[0x10..0x14].try_into().unwrap()), 0x0004_0082);
        assert_eq!(Header::parse(&b).unwrap(), h);
    }

    #[test]
    fn rejects_bad_chunk_size_for_none() {
        let mut h = Header::new(Compression::None, 0, [0; 16]);
        h.xml.original_size = 2;
        h.chunk_size = 32768;
        assert!(Header::parse(&h.to_bytes())
            .unwrap_err()
            .to_string()
            .contains("chunk size"));
    }
}
