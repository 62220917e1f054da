//! Guest-side glue of a WebAssembly component (a world feature, wasm32
//! only): wit-bindgen bindings for the three worlds, adapters from the SDK
//! traits to the generated ones, and the host imports behind the `log` /
//! `config` / `progress` modules (`imports.rs`). Nothing here is meant to be
//! named by plugin authors except through the export macros.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use crate::plugin::*;

/// Bindings of world `codec-plugin`.
#[cfg(feature = "codec")]
pub mod codec_bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "codec-plugin",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "wimguard_sdk::guest::codec_bindings",
    });
}

/// Bindings of world `destination-plugin`.
#[cfg(feature = "destination")]
pub mod destination_bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "destination-plugin",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "wimguard_sdk::guest::destination_bindings",
    });
}

/// Bindings of world `hook-plugin`.
#[cfg(feature = "hook")]
pub mod hook_bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "hook-plugin",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "wimguard_sdk::guest::hook_bindings",
    });
}

// The host imports are the same in every world; take them from the one world
// this build has bindings for.
#[cfg(feature = "codec")]
pub(crate) use codec_bindings::wimguard::plugin as imports;
#[cfg(all(feature = "destination", not(feature = "codec")))]
pub(crate) use destination_bindings::wimguard::plugin as imports;
#[cfg(all(feature = "hook", not(feature = "codec"), not(feature = "destination")))]
pub(crate) use hook_bindings::wimguard::plugin as imports;

// ------------------------------------------------------------ instance

thread_local! {
    // One component instance is single-threaded and holds one plugin value.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

#[allow(dead_code)]
fn set_instance<T: 'static>(value: T) {
    INSTANCE.with(|i| *i.borrow_mut() = Some(Box::new(value)));
}

#[allow(dead_code)]
fn with_instance<T: 'static, R>(f: impl FnOnce(&mut T) -> R) -> R {
    INSTANCE.with(|i| {
        let mut slot = i.borrow_mut();
        let value = slot
            .as_mut()
            .and_then(|b| b.downcast_mut::<T>())
            .expect("wimguard plugin called before a successful init");
        f(value)
    })
}

/// The adapter type the export macros hand to wit-bindgen.
pub struct Export<T>(PhantomData<fn() -> T>);

macro_rules! impl_plugin_guest {
    ($bindings:ident, $bound:ident, $kind:expr) => {
        impl<T: $bound> $bindings::exports::wimguard::plugin::plugin::Guest for Export<T> {
            fn info() -> $bindings::wimguard::plugin::types::PluginInfo {
                use $bindings::wimguard::plugin::types as w;
                let i = T::info();
                w::PluginInfo {
                    name: i.name,
                    version: i.version,
                    kind: $kind,
                    api_version: w::ApiVersion {
                        major: API_VERSION.major,
                        minor: API_VERSION.minor,
                    },
                    description: i.description,
                    extras: i.extras,
                }
            }

            fn init(
                host: $bindings::wimguard::plugin::types::HostInfo,
            ) -> Result<(), $bindings::wimguard::plugin::types::InitError> {
                use $bindings::wimguard::plugin::types as w;
                let host = HostInfo {
                    host_version: host.host_version,
                    api_version: ApiVersion {
                        major: host.api_version.major,
                        minor: host.api_version.minor,
                    },
                    extras: host.extras,
                };
                match T::init(&host) {
                    Ok(v) => {
                        set_instance(v);
                        Ok(())
                    }
                    Err(InitError::BadConfig(m)) => Err(w::InitError::BadConfig(m)),
                    Err(InitError::Unavailable(m)) => Err(w::InitError::Unavailable(m)),
                    Err(InitError::Other(m)) => Err(w::InitError::Other(m)),
                }
            }
        }
    };
}

#[cfg(feature = "codec")]
impl_plugin_guest!(
    codec_bindings,
    CodecPlugin,
    codec_bindings::wimguard::plugin::types::PluginKind::Codec
);
#[cfg(feature = "destination")]
impl_plugin_guest!(
    destination_bindings,
    DestinationPlugin,
    destination_bindings::wimguard::plugin::types::PluginKind::Destination
);
#[cfg(feature = "hook")]
impl_plugin_guest!(
    hook_bindings,
    HookPlugin,
    hook_bindings::wimguard::plugin::types::PluginKind::Hook
);

// --------------------------------------------------------------- codec

#[cfg(feature = "codec")]
impl<T: CodecPlugin> codec_bindings::exports::wimguard::plugin::codec::Guest for Export<T> {
    fn describe() -> codec_bindings::exports::wimguard::plugin::codec::CodecInfo {
        let i = T::describe();
        codec_bindings::exports::wimguard::plugin::codec::CodecInfo {
            id: i.id,
            name: i.name,
            max_chunk_size: i.max_chunk_size,
            extras: i.extras,
        }
    }

    fn compress(chunk: Vec<u8>, max_out: u32) -> Option<Vec<u8>> {
        let max_out = max_out as usize;
        with_instance::<T, _>(|p| {
            let mut out = Vec::new();
            (p.compress(&chunk, max_out, &mut out) && out.len() <= max_out).then_some(out)
        })
    }

    fn decompress(
        data: Vec<u8>,
        out_len: u32,
    ) -> Result<Vec<u8>, codec_bindings::exports::wimguard::plugin::codec::CodecError> {
        use codec_bindings::exports::wimguard::plugin::codec::CodecError as W;
        with_instance::<T, _>(|p| {
            let mut out = vec![0u8; out_len as usize];
            match p.decompress(&data, &mut out) {
                Ok(()) => Ok(out),
                Err(CodecPluginError::Corrupt(m)) => Err(W::Corrupt(m)),
                Err(CodecPluginError::Unsupported(m)) => Err(W::Unsupported(m)),
                Err(CodecPluginError::Other(m)) => Err(W::Other(m)),
            }
        })
    }
}

// --------------------------------------------------------- destination

#[cfg(feature = "destination")]
mod dest_conv {
    pub use super::destination_bindings::exports::wimguard::plugin::destination as w;
    use crate::plugin::*;

    pub fn err(e: DestinationError) -> w::DestinationError {
        match e {
            DestinationError::NotFound(m) => w::DestinationError::NotFound(m),
            DestinationError::Denied(m) => w::DestinationError::Denied(m),
            DestinationError::Unavailable(m) => w::DestinationError::Unavailable(m),
            DestinationError::Invalid(m) => w::DestinationError::Invalid(m),
            DestinationError::NoSpace(m) => w::DestinationError::NoSpace(m),
            DestinationError::Other(m) => w::DestinationError::Other(m),
        }
    }

    pub fn obj(o: ObjectInfo) -> w::ObjectInfo {
        w::ObjectInfo {
            key: o.key,
            size: o.size,
            modified_ms: o.modified_ms,
            etag: o.etag,
            extras: o.extras,
        }
    }
}

#[cfg(feature = "destination")]
impl<T: DestinationPlugin> destination_bindings::exports::wimguard::plugin::destination::Guest for Export<T> {
    fn begin_upload(key: String, size_hint: Option<u64>) -> Result<String, dest_conv::w::DestinationError> {
        with_instance::<T, _>(|p| p.begin_upload(&key, size_hint).map_err(dest_conv::err))
    }
    fn upload_part(token: String, part_number: u32, data: Vec<u8>) -> Result<String, dest_conv::w::DestinationError> {
        with_instance::<T, _>(|p| p.upload_part(&token, part_number, data).map_err(dest_conv::err))
    }
    fn finish_upload(
        token: String,
        receipts: Vec<String>,
    ) -> Result<dest_conv::w::ObjectInfo, dest_conv::w::DestinationError> {
        with_instance::<T, _>(|p| {
            p.finish_upload(&token, receipts)
                .map(dest_conv::obj)
                .map_err(dest_conv::err)
        })
    }
    fn abort_upload(token: String) -> Result<(), dest_conv::w::DestinationError> {
        with_instance::<T, _>(|p| p.abort_upload(&token).map_err(dest_conv::err))
    }
    fn read(key: String, offset: u64, len: u32) -> Result<Vec<u8>, dest_conv::w::DestinationError> {
        with_instance::<T, _>(|p| p.read(&key, offset, len).map_err(dest_conv::err))
    }
    fn stat(key: String) -> Result<Option<dest_conv::w::ObjectInfo>, dest_conv::w::DestinationError> {
        with_instance::<T, _>(|p| p.stat(&key).map(|o| o.map(dest_conv::obj)).map_err(dest_conv::err))
    }
    fn list(prefix: String, cursor: Option<String>) -> Result<dest_conv::w::ListPage, dest_conv::w::DestinationError> {
        with_instance::<T, _>(|p| {
            p.list(&prefix, cursor)
                .map(|page| dest_conv::w::ListPage {
                    objects: page.objects.into_iter().map(dest_conv::obj).collect(),
                    next_cursor: page.next_cursor,
                })
                .map_err(dest_conv::err)
        })
    }
    fn delete(key: String) -> Result<(), dest_conv::w::DestinationError> {
        with_instance::<T, _>(|p| p.delete(&key).map_err(dest_conv::err))
    }
}

// ---------------------------------------------------------------- hook

#[cfg(feature = "hook")]
impl<T: HookPlugin> hook_bindings::exports::wimguard::plugin::hook::Guest for Export<T> {
    fn on_event(
        event: hook_bindings::exports::wimguard::plugin::hook::BackupEvent,
    ) -> hook_bindings::exports::wimguard::plugin::hook::Verdict {
        use hook_bindings::exports::wimguard::plugin::hook as w;
        let event = match event {
            w::BackupEvent::PreBackup(s) => BackupEvent::PreBackup(BackupStart {
                job: s.job,
                backup_id: s.backup_id,
                sources: s.sources,
                destination: s.destination,
                extras: s.extras,
            }),
            w::BackupEvent::PostBackup(s) => BackupEvent::PostBackup(BackupSummary {
                job: s.job,
                backup_id: s.backup_id,
                succeeded: s.succeeded,
                error: s.error,
                files: s.files,
                bytes_read: s.bytes_read,
                bytes_written: s.bytes_written,
                duration_ms: s.duration_ms,
                extras: s.extras,
            }),
            w::BackupEvent::Other(o) => BackupEvent::Other {
                name: o.name,
                extras: o.extras,
            },
        };
        match with_instance::<T, _>(|p| p.on_event(event)) {
            Verdict::Allow => w::Verdict::Allow,
            Verdict::Veto(reason) => w::Verdict::Veto(reason),
            Verdict::Other { name, extras } => w::Verdict::Other(w::OtherVerdict { name, extras }),
        }
    }
}
