//! Inspecting a component before it is registered: which world it
//! exports, which API version it was built for, and what its `info` (and a
//! codec's `describe`) says, all checked against the contract.

use std::sync::Arc;

use wasmtime::component::Component;

use crate::host::{
    bindings, engine, hook_linker, new_store, run_bounded, valid_name, PluginError, PluginLimits, PluginSettings,
    API_MAJOR, API_MINOR,
};
use crate::http::HttpPolicy;
use crate::PluginKind;

/// The smallest max-chunk-size a codec may declare: the WIM format's
/// smallest chunk (4 KiB).
pub const MIN_CODEC_CHUNK: u32 = 1 << 12;

/// What a component says about itself, checked against the contract.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub name: String,
    pub version: String,
    pub kind: PluginKind,
    pub api_version: String,
    pub description: String,
    /// Codec plugins: the id archives record.
    pub codec_id: String,
}

/// The plugin interface and the one world `component` exports, refusing
/// another API major, a newer minor, or more or less than one world.
fn exported_world(component: &Component, label: &str) -> Result<(String, PluginKind), PluginError> {
    let wrong = |reason: String| PluginError::WrongWorld {
        plugin: label.to_string(),
        reason,
    };
    let ty = component.component_type();
    let mut plugin_export = None;
    let mut kind = None;
    for (name, _) in ty.exports(engine()) {
        let Some(rest) = name.strip_prefix("wimguard:plugin/") else {
            continue;
        };
        let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let mut parts = version.split('.').map(|p| p.parse::<u16>().ok());
        let (major, minor) = (parts.next().flatten(), parts.next().flatten());
        if major == Some(API_MAJOR) && minor.is_some_and(|m| m > API_MINOR) {
            return Err(wrong(format!(
                "it exports `{name}`, built for plugin API {version}; this host speaks {API_MAJOR}.{API_MINOR} \
                 and cannot offer what a newer minor may rely on (upgrade wimguard, or rebuild the plugin against \
                 wimguard-sdk {API_MAJOR}.{API_MINOR})"
            )));
        }
        if major != Some(API_MAJOR) {
            return Err(wrong(format!(
                "it exports `{name}`, built for plugin API {version}; this host speaks {API_MAJOR}.{API_MINOR} \
                 (rebuild it against wimguard-sdk {API_MAJOR}.x)"
            )));
        }
        match iface {
            "plugin" => plugin_export = Some(name.to_string()),
            "codec" | "destination" | "hook" => {
                if let Some(other) = kind.replace(iface) {
                    return Err(wrong(format!(
                        "it exports both `{other}` and `{iface}`: one world per plugin"
                    )));
                }
            }
            _ => {
                return Err(wrong(format!(
                    "it exports `{name}`, an interface this host does not know (newer SDK?)"
                )))
            }
        }
    }
    let Some(plugin_export) = plugin_export else {
        return Err(wrong(
            "it does not export `wimguard:plugin/plugin` (not a WimGuard plugin: build it with wimguard-sdk's \
             export macros)"
                .into(),
        ));
    };
    let Some(kind) = kind else {
        // No world export: say what it does import/export, briefly.
        return Err(wrong(
            "it exports none of the worlds codec-plugin, destination-plugin, hook-plugin".into(),
        ));
    };
    let kind = PluginKind::from_name(kind).expect("one of the three worlds, matched above");
    Ok((plugin_export, kind))
}

/// Asks a fresh instance its `info` (and a codec its `describe`), within
/// the default call limit.
#[allow(clippy::type_complexity)]
fn ask_info(
    component: &Component,
    label: &str,
    plugin_export: &str,
    kind: PluginKind,
) -> Result<
    (
        bindings::wimguard::plugin::types::PluginInfo,
        Option<bindings::exports::wimguard::plugin::codec::CodecInfo>,
    ),
    PluginError,
> {
    let wrong = |reason: String| PluginError::WrongWorld {
        plugin: label.to_string(),
        reason,
    };
    let ty = component.component_type();
    let limits = PluginLimits::default();
    let linker = hook_linker(component).map_err(|e| wrong(format!("{e:#}")))?;
    // Which call is running, for the error when the time limit stops it.
    let stage = std::cell::Cell::new("instantiate");
    let ask = async {
        let mut store = new_store(
            label.into(),
            Arc::new(PluginSettings::new()),
            &limits,
            HttpPolicy::deny_all(label.into()),
        );
        crate::host::yield_at_every_tick(&mut store);
        let instance = linker
            .instantiate_async(&mut store, component)
            .await
            .map_err(|e| wrong(format!("cannot instantiate it: {e:#}")))?;
        let iface = component
            .get_export_index(None, plugin_export)
            .ok_or_else(|| wrong("no plugin interface".into()))?;
        let info_idx = component
            .get_export_index(Some(&iface), "info")
            .ok_or_else(|| wrong("its plugin interface has no `info`".into()))?;
        let info_fn = instance
            .get_typed_func::<(), (bindings::wimguard::plugin::types::PluginInfo,)>(&mut store, &info_idx)
            .map_err(|e| wrong(format!("`info` has the wrong type: {e:#}")))?;
        stage.set("info");
        let (info,) = info_fn
            .call_async(&mut store, ())
            .await
            .map_err(|e| crate::host::call_error(e, &store, "info", &limits))?;
        if kind != PluginKind::Codec {
            return Ok((info, None));
        }
        let codec_iface = ty
            .exports(engine())
            .map(|(n, _)| n.to_string())
            .find(|n| n.starts_with("wimguard:plugin/codec@"))
            .and_then(|n| component.get_export_index(None, n.as_str()))
            .ok_or_else(|| wrong("no codec interface".into()))?;
        let describe_idx = component
            .get_export_index(Some(&codec_iface), "describe")
            .ok_or_else(|| wrong("its codec interface has no `describe`".into()))?;
        let describe = instance
            .get_typed_func::<(), (bindings::exports::wimguard::plugin::codec::CodecInfo,)>(&mut store, &describe_idx)
            .map_err(|e| wrong(format!("`describe` has the wrong type: {e:#}")))?;
        stage.set("describe");
        let (desc,) = describe
            .call_async(&mut store, ())
            .await
            .map_err(|e| crate::host::call_error(e, &store, "describe", &limits))?;
        Ok((info, Some(desc)))
    };
    let (info, desc) = match run_bounded(limits.call_timeout, None, ask) {
        Ok(r) => r?,
        Err(_) => {
            return Err(PluginError::Timeout {
                plugin: label.to_string(),
                call: stage.get(),
                limit: limits.call_timeout,
            })
        }
    };
    Ok((info, desc))
}

/// Checks that `component` is a plugin of a world this host knows, of API
/// major 1, and asks its `info` (and, for codecs, `describe`).
pub fn inspect_component(component: &Component, sha256: &str) -> Result<Inspected, PluginError> {
    let label = format!("sha256:{}", &sha256[..12.min(sha256.len())]);
    let wrong = |reason: String| PluginError::WrongWorld {
        plugin: label.clone(),
        reason,
    };
    let (plugin_export, kind) = exported_world(component, &label)?;
    crate::host::check_imports(component, kind.as_str(), &label)?;
    let (info, desc) = ask_info(component, &label, &plugin_export, kind)?;
    use bindings::wimguard::plugin::types::PluginKind as WitKind;
    let said = match &info.kind {
        WitKind::Codec => PluginKind::Codec,
        WitKind::Destination => PluginKind::Destination,
        WitKind::Hook => PluginKind::Hook,
        WitKind::Other(o) => return Err(wrong(format!("`info` says kind {o:?}, which this host does not know"))),
    };
    if said != kind {
        return Err(wrong(format!(
            "`info` says kind {said} but it exports the {kind} world"
        )));
    }
    if info.api_version.major != API_MAJOR || info.api_version.minor > API_MINOR {
        return Err(wrong(format!(
            "`{}` was built for plugin API {}.{}, this host speaks {API_MAJOR}.{API_MINOR} (plugins built against \
             an older or equal 1.x SDK work; upgrade wimguard or rebuild the plugin)",
            info.name, info.api_version.major, info.api_version.minor
        )));
    }
    if !valid_name(&info.name) {
        return Err(wrong(format!(
            "invalid plugin name {:?} (want [a-z0-9-], 1..=64 bytes)",
            info.name
        )));
    }
    let mut codec_id = String::new();
    if let Some(desc) = desc {
        if !valid_codec_id(&desc.id) {
            return Err(wrong(format!(
                "codec id {:?} is not valid (want [a-z0-9-], 1..=64 bytes; third parties use `x-<vendor>-<name>`)",
                desc.id
            )));
        }
        // Archives use power-of-two chunks of at least 4 KiB (the WIM
        // format's floor); a codec that cannot take that could never write one.
        if desc.max_chunk_size < MIN_CODEC_CHUNK {
            return Err(wrong(format!(
                "`describe` says max-chunk-size {}; codecs must accept chunks of at least {MIN_CODEC_CHUNK} bytes",
                desc.max_chunk_size
            )));
        }
        codec_id = desc.id;
    }
    Ok(Inspected {
        name: info.name,
        version: info.version,
        kind,
        api_version: format!("{}.{}", info.api_version.major, info.api_version.minor),
        description: info.description,
        codec_id,
    })
}

/// Is `id` usable as a codec id (a plugin name, and not a word the format
/// or the host reserves)?
pub fn valid_codec_id(id: &str) -> bool {
    valid_name(id) && id != "none" && id != "plugin" && id != "lzms"
}
