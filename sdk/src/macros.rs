//! The export macros. They expand in the plugin crate, so the target checks
//! (`cfg(target_arch = "wasm32")`) are the plugin build's own; whether the
//! native symbols are emitted depends on this crate's `native` feature, hence
//! two definitions of [`export_codec!`].

/// Exports a [`CodecPlugin`](crate::CodecPlugin) as the component's
/// `codec-plugin` world. Call once, at the crate root of a `cdylib`.
///
/// With the SDK feature `native`, a non-wasm build additionally exports the
/// native ABI (see [`native`](crate::native)); the plugin type must then be
/// `Send`, and the crate must not be built with `panic = "abort"`.
#[cfg(not(feature = "native"))]
#[macro_export]
macro_rules! export_codec {
    ($plugin:ty) => {
        $crate::__export_codec_component!($plugin);
    };
}

/// Exports a [`CodecPlugin`](crate::CodecPlugin) as the component's
/// `codec-plugin` world. Call once, at the crate root of a `cdylib`.
///
/// With the SDK feature `native` (on here), a non-wasm build additionally
/// exports the native ABI (see [`native`](crate::native)); the plugin type
/// must then be `Send`, and the crate must not be built with
/// `panic = "abort"`.
#[cfg(feature = "native")]
#[macro_export]
macro_rules! export_codec {
    ($plugin:ty) => {
        $crate::__export_codec_component!($plugin);
        $crate::__export_codec_native!($plugin);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_codec_component {
    ($plugin:ty) => {
        // Component exports only exist on wasm; a native build of the same
        // crate (tests, or a native cdylib) compiles without them.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __WimguardExport = $crate::guest::Export<$plugin>;
            $crate::guest::codec_bindings::export!(
                __WimguardExport with_types_in $crate::guest::codec_bindings
            );
        };
    };
}

/// The native ABI 1 symbols for a codec plugin (see `crate::native`).
#[cfg(feature = "native")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_codec_native {
    ($plugin:ty) => {
        // A panic must become an error code at the ABI boundary; with
        // `panic = "abort"` it would kill the daemon instead.
        #[cfg(all(not(target_arch = "wasm32"), panic = "abort"))]
        compile_error!(
            "wimguard-sdk feature `native`: build the plugin with `panic = \"unwind\"` (remove `panic = \"abort\"` \
             from [profile.*] in Cargo.toml; wasm32 builds abort on panic anyway), so a panic in the plugin becomes \
             an error instead of aborting the WimGuard daemon"
        );

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            use ::core::ffi::c_void;
            use $crate::native::{WgBuf, WgHostApi, WgPluginInfo};

            /// Native ABI version of this plugin.
            #[unsafe(no_mangle)]
            pub extern "C" fn wimguard_native_abi_version() -> u32 {
                $crate::native::ABI_VERSION
            }

            /// Static description of this plugin (null if it panicked).
            #[unsafe(no_mangle)]
            pub extern "C" fn wimguard_native_plugin_info() -> *const WgPluginInfo {
                static INFO: $crate::native_guest::InfoCell = $crate::native_guest::InfoCell::new();
                $crate::native_guest::plugin_info::<$plugin>(&INFO)
            }

            /// A new initialised instance, or null with the reason in `err`.
            ///
            /// # Safety
            ///
            /// See `wimguard_sdk::native::CodecNewFn`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn wimguard_native_codec_new(host: *const WgHostApi, err: *const WgBuf) -> *mut c_void {
                // SAFETY: the caller upholds the contract of `CodecNewFn`.
                unsafe { $crate::native_guest::codec_new::<$plugin>(host, err) }
            }

            /// Frees an instance.
            ///
            /// # Safety
            ///
            /// See `wimguard_sdk::native::CodecFreeFn`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn wimguard_native_codec_free(inst: *mut c_void) {
                // SAFETY: the caller upholds the contract of `CodecFreeFn`.
                unsafe { $crate::native_guest::codec_free::<$plugin>(inst) }
            }

            /// Compresses one chunk.
            ///
            /// # Safety
            ///
            /// See `wimguard_sdk::native::CodecCompressFn`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn wimguard_native_codec_compress(
                inst: *mut c_void,
                input: *const u8,
                input_len: usize,
                out: *mut u8,
                out_cap: usize,
                out_len: *mut usize,
                err: *const WgBuf,
            ) -> i32 {
                // SAFETY: the caller upholds the contract of `CodecCompressFn`.
                unsafe {
                    $crate::native_guest::codec_compress::<$plugin>(inst, input, input_len, out, out_cap, out_len, err)
                }
            }

            /// Decompresses one chunk.
            ///
            /// # Safety
            ///
            /// See `wimguard_sdk::native::CodecDecompressFn`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn wimguard_native_codec_decompress(
                inst: *mut c_void,
                input: *const u8,
                input_len: usize,
                out: *mut u8,
                out_len: usize,
                err: *const WgBuf,
            ) -> i32 {
                // SAFETY: the caller upholds the contract of `CodecDecompressFn`.
                unsafe { $crate::native_guest::codec_decompress::<$plugin>(inst, input, input_len, out, out_len, err) }
            }

            // The host calls through the type aliases; keep the signatures in step.
            const _: $crate::native::AbiVersionFn = wimguard_native_abi_version;
            const _: $crate::native::PluginInfoFn = wimguard_native_plugin_info;
            const _: $crate::native::CodecNewFn = wimguard_native_codec_new;
            const _: $crate::native::CodecFreeFn = wimguard_native_codec_free;
            const _: $crate::native::CodecCompressFn = wimguard_native_codec_compress;
            const _: $crate::native::CodecDecompressFn = wimguard_native_codec_decompress;
        };
    };
}

/// Exports a [`DestinationPlugin`](crate::DestinationPlugin) as the
/// component's `destination-plugin` world (WebAssembly only).
#[macro_export]
macro_rules! export_destination {
    ($plugin:ty) => {
        // Component exports only exist on wasm; a native build of the same
        // crate (tests) compiles without them.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __WimguardExport = $crate::guest::Export<$plugin>;
            $crate::guest::destination_bindings::export!(
                __WimguardExport with_types_in $crate::guest::destination_bindings
            );
        };
    };
}

/// Exports a [`HookPlugin`](crate::HookPlugin) as the component's
/// `hook-plugin` world (WebAssembly only).
#[macro_export]
macro_rules! export_hook {
    ($plugin:ty) => {
        // Component exports only exist on wasm; a native build of the same
        // crate (tests) compiles without them.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __WimguardExport = $crate::guest::Export<$plugin>;
            $crate::guest::hook_bindings::export!(
                __WimguardExport with_types_in $crate::guest::hook_bindings
            );
        };
    };
}
