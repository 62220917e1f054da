//! The JSON body of each event. serde_json does the encoding (string
//! escaping, numbers); the `Serialize` impls are written by hand so the
//! field order is the documented one and no derive macro is needed.

use std::collections::BTreeSet;

use serde::ser::{Serialize, SerializeMap, Serializer};
use wimguard_sdk::BackupEvent;

/// The event's name as sent in `"event"` (and used in log messages).
pub fn event_name(event: &BackupEvent) -> &str {
    match event {
        BackupEvent::PreBackup(_) => "pre-backup",
        BackupEvent::PostBackup(_) => "post-backup",
        BackupEvent::Other { name, .. } => name,
    }
}

/// The request body for `event`.
pub fn event_body(event: &BackupEvent) -> Vec<u8> {
    // Only strings, integers, booleans and sequences of them: cannot fail.
    serde_json::to_vec(&Event(event)).expect("serialising plain data to JSON")
}

struct Event<'a>(&'a BackupEvent);

impl Serialize for Event<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            BackupEvent::PreBackup(b) => {
                let mut m = s.serialize_map(Some(6))?;
                m.serialize_entry("event", "pre-backup")?;
                m.serialize_entry("job", &b.job)?;
                m.serialize_entry("backup_id", &b.backup_id)?;
                m.serialize_entry("sources", &b.sources)?;
                m.serialize_entry("destination", &b.destination)?;
                m.serialize_entry("extras", &Extras(&b.extras))?;
                m.end()
            }
            BackupEvent::PostBackup(b) => {
                let mut m = s.serialize_map(Some(10))?;
                m.serialize_entry("event", "post-backup")?;
                m.serialize_entry("job", &b.job)?;
                m.serialize_entry("backup_id", &b.backup_id)?;
                m.serialize_entry("succeeded", &b.succeeded)?;
                m.serialize_entry("error", &b.error)?;
                m.serialize_entry("files", &b.files)?;
                m.serialize_entry("bytes_read", &b.bytes_read)?;
                m.serialize_entry("bytes_written", &b.bytes_written)?;
                m.serialize_entry("duration_ms", &b.duration_ms)?;
                m.serialize_entry("extras", &Extras(&b.extras))?;
                m.end()
            }
            BackupEvent::Other { name, extras } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("event", name)?;
                m.serialize_entry("extras", &Extras(extras))?;
                m.end()
            }
        }
    }
}

/// Extras as a JSON object. The WIT list may repeat a key; an object should
/// not, so the first value of a key wins.
struct Extras<'a>(&'a [(String, String)]);

impl Serialize for Extras<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seen = BTreeSet::new();
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.0 {
            if seen.insert(k.as_str()) {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wimguard_sdk::{BackupStart, BackupSummary};

    fn text(event: &BackupEvent) -> String {
        String::from_utf8(event_body(event)).unwrap()
    }

    #[test]
    fn pre_backup_with_escaping() {
        let e = BackupEvent::PreBackup(BackupStart {
            job: "nightly \"docs\"".into(),
            backup_id: "b-1".into(),
            sources: vec![
                r"C:\Users\ann".into(),
                "/home/zoë/日本".into(),
                "tab\there\nnl\u{1}\u{7f}".into(),
            ],
            destination: "nas".into(),
            extras: vec![
                ("k".into(), "v".into()),
                ("x-acme-a".into(), "é".into()),
                ("k".into(), "dup".into()),
            ],
        });
        assert_eq!(
            text(&e),
            concat!(
                r#"{"event":"pre-backup","job":"nightly \"docs\"","backup_id":"b-1","#,
                r#""sources":["C:\\Users\\ann","/home/zoë/日本","tab\there\nnl\u0001"#,
                // DEL and non-ASCII stay as they are (valid JSON): only
                // quotes, backslashes and characters below 0x20 are escaped.
                "\u{7f}",
                r#""],"destination":"nas","extras":{"k":"v","x-acme-a":"é"}}"#
            )
        );
        // And it parses back to the same strings.
        let v: serde_json::Value = serde_json::from_slice(&event_body(&e)).unwrap();
        assert_eq!(v["sources"][2], "tab\there\nnl\u{1}\u{7f}");
        assert_eq!(v["job"], "nightly \"docs\"");
    }

    #[test]
    fn post_backup_and_other() {
        let e = BackupEvent::PostBackup(BackupSummary {
            job: "j".into(),
            backup_id: "b".into(),
            succeeded: false,
            error: Some("disk full".into()),
            files: 3,
            bytes_read: u64::MAX,
            bytes_written: 0,
            duration_ms: 1500,
            extras: vec![],
        });
        assert_eq!(
            text(&e),
            concat!(
                r#"{"event":"post-backup","job":"j","backup_id":"b","succeeded":false,"error":"disk full","#,
                r#""files":3,"bytes_read":18446744073709551615,"bytes_written":0,"duration_ms":1500,"extras":{}}"#
            )
        );
        assert_eq!(event_name(&e), "post-backup");
        let BackupEvent::PostBackup(mut s) = e else {
            unreachable!()
        };
        s.succeeded = true;
        s.error = None;
        assert!(text(&BackupEvent::PostBackup(s)).contains(r#""succeeded":true,"error":null,"#));
        let o = BackupEvent::Other {
            name: "restore-start".into(),
            extras: vec![("a\u{0}".into(), "".into())],
        };
        assert_eq!(text(&o), r#"{"event":"restore-start","extras":{"a\u0000":""}}"#);
        assert_eq!(event_name(&o), "restore-start");
    }
}
