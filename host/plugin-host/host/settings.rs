//! The settings a plugin reads through its `config` import.

use super::*;

/// One value of the `config` import.
#[derive(Clone, PartialEq, Eq)]
pub struct SettingValue {
    pub value: String,
    /// A bound secret (from an environment variable): never logged or shown.
    pub secret: bool,
}

impl std::fmt::Debug for SettingValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.secret {
            f.write_str("<secret>")
        } else {
            self.value.fmt(f)
        }
    }
}

/// The admin's settings and bound secrets for one plugin, as the `config`
/// import hands them out.
pub type PluginSettings = BTreeMap<String, SettingValue>;

/// Plain settings (no secrets), e.g. for tests.
pub fn plain_settings<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> PluginSettings {
    pairs
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                SettingValue {
                    value: v.to_string(),
                    secret: false,
                },
            )
        })
        .collect()
}
