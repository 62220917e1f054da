//! What a plugin may import: WASI (empty or nearly), `wasi:http` for hooks
//! and destinations, and WimGuard's own interfaces; checked at install and
//! at load.

use super::*;

/// `HasData` for the WASI io interfaces, which work on the resource table.
pub(super) struct IoTable;

impl wasmtime::component::HasData for IoTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// What codec plugins get from WASI: the io streams (sync: a codec's only
/// streams are its stdio, which never block) and the cli interfaces that
/// Rust std imports.
pub(super) fn add_wasi_base(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    wasmtime_wasi::p2::bindings::sync::io::poll::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    wasmtime_wasi::p2::bindings::sync::io::streams::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    add_wasi_cli(l)
}

/// The cli interfaces: stdio goes to the log; environment, arguments and
/// stdin are empty; `exit` ends the call.
pub(super) fn add_wasi_cli(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::p2::bindings::cli;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    Ok(())
}

/// The import families each kind of plugin may use. Anything else
/// (`wasi:filesystem`, `wasi:sockets`, and for codecs also clocks, random
/// and http) is refused when the plugin is installed or loaded: a sandbox
/// that never links a capability cannot be talked into granting it.
pub(super) fn allowed_imports(kind: &str) -> &'static [&'static str] {
    match kind {
        "codec" => &["wimguard:plugin/", "wasi:io/", "wasi:cli/"],
        _ => &[
            "wimguard:plugin/",
            "wasi:io/",
            "wasi:cli/",
            "wasi:clocks/",
            "wasi:random/",
            "wasi:http/types@",
            "wasi:http/outgoing-handler@",
        ],
    }
}

/// Refuses a component of `kind` that imports a capability its kind is not
/// granted, naming the plugin and the import.
pub(crate) fn check_imports(component: &Component, kind: &str, plugin: &str) -> Result<(), PluginError> {
    let allowed = allowed_imports(kind);
    let refused: Vec<String> = component
        .component_type()
        .imports(engine())
        .map(|(name, _)| name.to_string())
        .filter(|name| !allowed.iter().any(|p| name.starts_with(p)))
        .collect();
    // Name the most telling refusal: filesystem, then sockets, then the rest
    // (reading a file also pulls in clocks, which would hide the point).
    let rank = |n: &String| match n {
        n if n.starts_with("wasi:filesystem") => 0,
        n if n.starts_with("wasi:sockets") => 1,
        _ => 2,
    };
    let Some(name) = refused.iter().min_by_key(|n| rank(n)) else {
        return Ok(());
    };
    let why = match rank(name) {
        0 => "plugins get no filesystem",
        1 => "plugins get no sockets (hooks and destinations reach the network through wasi:http)",
        _ if kind == "codec" => "codec plugins are pure computation and get no WASI besides io and stdio",
        _ => "the sandbox does not grant it",
    };
    Err(PluginError::Denied {
        plugin: plugin.to_string(),
        call: "load",
        what: format!("the import `{name}`"),
        why: why.into(),
    })
}

/// The linker for codec plugins: the three host interfaces and the WASI
/// base, nothing else (see [`check_imports`]).
pub(crate) fn codec_linker(component: &Component) -> Result<Linker<HostState>, wasmtime::Error> {
    let _ = component;
    let mut linker = Linker::new(engine());
    add_wasi_base(&mut linker)?;
    bindings::CodecPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// The linker for hook and destination plugins (their worlds import the
/// same host interfaces): the WASI base plus
/// clocks, random and `wasi:http` (every request checked against the
/// plugin's allow-list); never filesystem or sockets.
///
/// Its io and http functions are async: instances made with it are driven
/// by [`run_bounded`], whose wall-clock limit also stops a guest blocked in
/// the host (a sleep, a stalled response body). Calls go through the
/// `*_async` APIs.
pub(crate) fn hook_linker(component: &Component) -> Result<Linker<HostState>, wasmtime::Error> {
    let _ = component;
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::p2::bindings::{clocks, random};
    use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
    use wasmtime_wasi_io::bindings::wasi::io;
    let mut linker = Linker::new(engine());
    let l = &mut linker;
    io::error::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    io::poll::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    io::streams::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    add_wasi_cli(l)?;
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(l)?;
    hook_bindings::HookPlugin::add_to_linker::<HostState, HasSelf<HostState>>(l, |s| s)?;
    Ok(linker)
}

/// Links a hook or destination `component` (its imports checked against
/// what `kind` is granted) and makes its world's typed `InstancePre` with
/// `typed` (`HookPluginPre::new`, `DestinationPluginPre::new`). Errors name
/// the plugin.
pub(crate) fn linked_pre<P>(
    component: &Component,
    kind: &str,
    name: &str,
    typed: impl FnOnce(wasmtime::component::InstancePre<HostState>) -> wasmtime::Result<P>,
) -> Result<P, PluginError> {
    let wrong = |reason: String| PluginError::WrongWorld {
        plugin: name.to_string(),
        reason,
    };
    check_imports(component, kind, name)?;
    let linker = hook_linker(component).map_err(|e| wrong(format!("host linker: {e:#}")))?;
    let pre = linker.instantiate_pre(component).map_err(|e| wrong(format!("{e:#}")))?;
    typed(pre).map_err(|e| wrong(format!("{e:#}")))
}
