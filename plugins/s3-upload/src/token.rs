//! Upload tokens: everything an instance needs to continue or abort an
//! upload another instance (or an earlier daemon) began, in one printable
//! string. Nothing about an upload is kept in the plugin.
//!
//! * `s3u1:single:<size>:<object key>` — one PutObject of exactly `size`
//!   bytes (the host promised a single part);
//! * `s3u1:multi:<upload id>:<object key>` — a multipart upload.
//!
//! Fields are percent-encoded, so keys and upload ids may hold any
//! character, `:` included. The object key is the full key (with the
//! prefix at the time of `begin-upload`), so a changed `prefix` setting
//! cannot make an old token point elsewhere.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but letters, digits and `-._~/` is encoded.
const FIELD: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

const MAGIC: &str = "s3u1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// One PutObject of exactly `size` bytes.
    Single { key: String, size: u64 },
    /// A multipart upload.
    Multi { key: String, upload_id: String },
}

impl Token {
    pub fn key(&self) -> &str {
        match self {
            Token::Single { key, .. } | Token::Multi { key, .. } => key,
        }
    }

    pub fn encode(&self) -> String {
        let enc = |s: &str| utf8_percent_encode(s, FIELD).to_string();
        match self {
            Token::Single { key, size } => format!("{MAGIC}:single:{size}:{}", enc(key)),
            Token::Multi { key, upload_id } => format!("{MAGIC}:multi:{}:{}", enc(upload_id), enc(key)),
        }
    }

    /// Parses a token; the error says why it is not one of ours.
    pub fn decode(token: &str) -> Result<Token, String> {
        let not_ours = || {
            let shown: String = token.chars().take(80).collect();
            format!("`{shown}` is not an upload token of s3-upload")
        };
        let mut parts = token.splitn(4, ':');
        let (Some(MAGIC), Some(mode), Some(field), Some(key)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(not_ours());
        };
        let dec = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| not_ours())
        };
        let key = dec(key)?;
        if key.is_empty() {
            return Err(not_ours());
        }
        match mode {
            "single" => Ok(Token::Single {
                key,
                size: field.parse().map_err(|_| not_ours())?,
            }),
            "multi" => {
                let upload_id = dec(field)?;
                if upload_id.is_empty() {
                    return Err(not_ours());
                }
                Ok(Token::Multi { key, upload_id })
            }
            _ => Err(not_ours()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for t in [
            Token::Single {
                key: "p/n/000001.wim".into(),
                size: 42,
            },
            Token::Multi {
                key: "we:ird %key/ü\n".into(),
                upload_id: "abc:def/+=%".into(),
            },
        ] {
            let s = t.encode();
            assert!(s.bytes().all(|b| b.is_ascii_graphic()), "{s}");
            assert_eq!(Token::decode(&s).unwrap(), t);
        }
        assert_eq!(
            Token::Single {
                key: "a/b.wim".into(),
                size: 7
            }
            .encode(),
            "s3u1:single:7:a/b.wim"
        );
    }

    #[test]
    fn foreign_tokens_are_refused() {
        for bad in [
            "",
            "s3u1",
            "s3u1:single:x:key",
            "s3u1:multi::key",
            "s3u1:single:1:",
            "s3u2:single:1:k",
            "s3u1:other:1:k",
            "s3u1:multi:%ff:k",
        ] {
            let e = Token::decode(bad).unwrap_err();
            assert!(e.contains("not an upload token"), "{bad}: {e}");
        }
    }
}
