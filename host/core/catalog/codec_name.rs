//! Which codec compresses an archive, by name: a standard WIM compression
//! or the id of a codec plugin. Stored in the catalog, given in requests
//! and config, recorded in archives' XML (plugin ids).

use crate::wim::Compression;

/// A codec name: `none`, `xpress`, `lzx`, or a codec plugin's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum CodecName {
    /// Uncompressed.
    None,
    Xpress,
    #[default]
    Lzx,
    /// A codec plugin's id (`[a-z0-9-]`, 1..=64 bytes; not a standard or
    /// reserved word).
    Plugin(String),
}

impl CodecName {
    /// The word stored and shown.
    pub fn as_str(&self) -> &str {
        match self {
            CodecName::None => Compression::None.name(),
            CodecName::Xpress => Compression::Xpress.name(),
            CodecName::Lzx => Compression::Lzx.name(),
            CodecName::Plugin(id) => id,
        }
    }

    /// The codec named `s`; None for a word that can name no codec (empty,
    /// other characters, too long, or a reserved word such as `lzms`).
    pub fn from_name(s: &str) -> Option<CodecName> {
        match Compression::from_standard_name(s) {
            Some(c) => CodecName::of_standard(c),
            None => crate::plugins::inspect::valid_codec_id(s).then(|| CodecName::Plugin(s.to_string())),
        }
    }

    /// [`from_name`](Self::from_name) for user input: an error naming the
    /// word and what is allowed.
    pub fn parse(s: &str) -> Result<CodecName, String> {
        CodecName::from_name(s).ok_or_else(|| {
            format!(
                "{s:?} is not a codec name: use none, xpress, lzx, or a codec plugin's id ([a-z0-9-], 1 to 64 bytes)"
            )
        })
    }

    /// The standard compression this names; None for a plugin.
    pub fn standard(&self) -> Option<Compression> {
        match self {
            CodecName::None => Some(Compression::None),
            CodecName::Xpress => Some(Compression::Xpress),
            CodecName::Lzx => Some(Compression::Lzx),
            CodecName::Plugin(_) => None,
        }
    }

    /// The name of a standard compression (`Compression::Plugin` and
    /// `Lzms` name no codec by themselves).
    pub fn of_standard(c: Compression) -> Option<CodecName> {
        match c {
            Compression::None => Some(CodecName::None),
            Compression::Xpress => Some(CodecName::Xpress),
            Compression::Lzx => Some(CodecName::Lzx),
            Compression::Lzms | Compression::Plugin => None,
        }
    }
}

impl std::fmt::Display for CodecName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_words_are_refused() {
        for n in ["none", "xpress", "lzx", "x-acme-rle", "zstd"] {
            assert_eq!(CodecName::from_name(n).unwrap().as_str(), n);
        }
        assert_eq!(CodecName::from_name("lzx"), Some(CodecName::Lzx));
        assert_eq!(CodecName::from_name("x-acme-rle").unwrap().standard(), None);
        for bad in ["", "LZX", "lzms", "plugin", "a b", &"x".repeat(65)] {
            assert_eq!(CodecName::from_name(bad), None, "{bad:?}");
        }
        assert!(CodecName::parse("Zstd")
            .unwrap_err()
            .contains("\"Zstd\" is not a codec name"));
    }
}
