//! Compiling an uploaded component within a time and memory limit.
//!
//! Cranelift's time and memory grow faster than linearly with the size of
//! a function, so a small hostile file (one huge function, deep nesting,
//! many big functions) can keep a compiler busy for minutes and GiBs. A
//! thread cannot be stopped or have its memory capped, so an install
//! compiles in a **child process** (this binary, `internal-compile-plugin`)
//! with `RLIMIT_AS` at the memory limit, `RLIMIT_CPU` as a backstop and a
//! wall-clock deadline after which it is killed: whatever it does, the
//! daemon gets its answer in time and the memory comes back. Before that, a
//! cheap pass over the file (wasmparser, the parser wasmtime itself uses on
//! untrusted input) refuses a function body larger than the limit, with a
//! message that names it.
//!
//! The child compiles one function at a time (`parallel_compilation` off,
//! which the compiled form does not depend on) with the daemon's engine
//! settings, and writes the compiled form to its stdout; the daemon loads
//! it with the shared engine, which checks it was made by this wasmtime
//! with these settings.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wasmtime::component::Component;

use super::host::{engine, engine_config, sha256_hex, PluginError};

/// What compiling one uploaded component may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileLimits {
    /// Wall-clock time for the compiler process.
    pub timeout: Duration,
    /// Address space of the compiler process (`RLIMIT_AS`), bytes.
    pub memory_bytes: u64,
    /// The largest function body accepted, bytes.
    pub max_function_bytes: usize,
    /// The program that compiles (`internal-compile-plugin`): this very
    /// binary (`/proc/self/exe`, right even after it was replaced on disk).
    pub program: PathBuf,
}

impl CompileLimits {
    /// Default compile time limit, seconds. A Rust plugin of a few MiB
    /// compiles in well under a second in a release build.
    pub const DEFAULT_TIMEOUT_SECONDS: f64 = 60.0;
    /// Default memory of the compiler process, MiB: it needs some 60 MiB
    /// of address space before compiling anything (debug build), and the
    /// bundled plugins compile within 30 MiB of RSS.
    pub const DEFAULT_MEMORY_MIB: u64 = 1024;
    /// Default largest function body, KiB: a coarse first filter (the
    /// largest function of the bundled plugins and test fixtures is 7.5
    /// KB); the compiler process's limits are the real bound.
    pub const DEFAULT_MAX_FUNCTION_KIB: u64 = 1024;
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            timeout: Duration::from_secs_f64(Self::DEFAULT_TIMEOUT_SECONDS),
            memory_bytes: Self::DEFAULT_MEMORY_MIB << 20,
            max_function_bytes: (Self::DEFAULT_MAX_FUNCTION_KIB << 10) as usize,
            program: PathBuf::from("/proc/self/exe"),
        }
    }
}

/// The hidden subcommand that runs the compiler child.
pub const COMPILE_SUBCOMMAND: &str = "internal-compile-plugin";

/// Exit status of the child when the bytes are not a valid component.
const EXIT_INVALID: i32 = 3;
/// Exit status of the child when it failed for reasons of its own (I/O).
const EXIT_HOST: i32 = 4;

/// Compiles component `bytes` (an upload, not trusted) within `limits`:
/// function sizes are checked first, then a child process compiles. Errors
/// name the plugin by `sha256:<prefix>` and the limit that stopped it.
pub fn compile_untrusted(bytes: &[u8], limits: &CompileLimits) -> Result<Component, PluginError> {
    let label = format!("sha256:{}", &sha256_hex(bytes)[..12]);
    check_function_sizes(bytes, limits.max_function_bytes, &label)?;
    let compiled = run_compiler(bytes, limits, &label)?;
    // SAFETY: `deserialize` runs the bytes as native code. They are what
    // `Engine::precompile_component` of this very binary (the child runs
    // /proc/self/exe) wrote on a pipe only we hold, and wasmtime checks its
    // header (version, engine settings) before using them.
    unsafe { Component::deserialize(engine(), &compiled) }.map_err(|e| PluginError::Invalid {
        plugin: label,
        reason: format!("the compiled form could not be loaded: {e:#}"),
    })
}

/// Refuses a component with a function body larger than `max` bytes,
/// naming the function. Parse errors are left to the compiler, which
/// explains them better.
pub fn check_function_sizes(bytes: &[u8], max: usize, label: &str) -> Result<(), PluginError> {
    use wasmparser::{Encoding, Parser, Payload};
    let (mut module, mut function) = (0usize, 0usize);
    for payload in Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(Payload::Version {
                encoding: Encoding::Module,
                ..
            }) => {
                module += 1;
                function = 0;
            }
            Ok(Payload::CodeSectionEntry(body)) => {
                function += 1;
                let size = body.range().len();
                if size > max {
                    return Err(PluginError::CompileLimit {
                        plugin: label.to_string(),
                        what: format!(
                            "function {function} of core module {module} has a body of {} KiB, more than the {} \
                             KiB accepted",
                            size.div_ceil(1024),
                            max / 1024
                        ),
                        key: "maxFunctionKib",
                    });
                }
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Runs the compiler child on `bytes` and returns the compiled form, or
/// why there is none.
fn run_compiler(bytes: &[u8], limits: &CompileLimits, label: &str) -> Result<Vec<u8>, PluginError> {
    let memory = limits.memory_bytes;
    let cpu_seconds = limits.timeout.as_secs() + 2;
    let mut cmd = Command::new(&limits.program);
    cmd.arg(COMPILE_SUBCOMMAND)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only async-signal-safe calls: setrlimit
    // and prctl, on values computed before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let limit = |resource, value: u64| {
                let rl = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &rl) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            limit(libc::RLIMIT_AS, memory)?;
            // A backstop: the daemon kills it at the deadline anyway.
            limit(libc::RLIMIT_CPU, cpu_seconds)?;
            // A hostile file's crash leaves no core dump behind.
            limit(libc::RLIMIT_CORE, 0)?;
            // Never outlive the thread that waits for it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    let invalid = |reason: String| PluginError::Invalid {
        plugin: label.to_string(),
        reason,
    };
    let internal = |reason: String| PluginError::Internal {
        plugin: label.to_string(),
        reason,
    };
    let needed_more_memory = || PluginError::CompileLimit {
        plugin: label.to_string(),
        what: format!("compiling it needed more than {} MiB of memory", memory >> 20),
        key: "compileMemoryMib",
    };
    let mut child = cmd.spawn().map_err(|e| match e.raw_os_error() {
        // exec itself did not fit in the limit.
        Some(libc::ENOMEM) => needed_more_memory(),
        _ => internal(format!("cannot start the compiler process: {e}")),
    })?;
    // Feed and drain on threads: the pipes are small and the child blocks.
    let input = child.stdin.take().map(|mut stdin| {
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            // A child that died early closes its end: nothing to report here.
            let _ = stdin.write_all(&bytes);
        })
    });
    // Everything is read (a full pipe would stall the child), at most
    // `cap` bytes kept.
    let drain = |pipe: Option<Box<dyn Read + Send>>, cap: u64| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = (&mut pipe).take(cap).read_to_end(&mut kept);
                let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            }
            kept
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>), memory);
    let stderr = drain(
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        64 << 10,
    );
    let deadline = Instant::now() + limits.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(internal(format!("waiting for the compiler process: {e}")));
            }
        }
    };
    if let Some(t) = input {
        let _ = t.join();
    }
    let compiled = stdout.join().unwrap_or_default();
    let said = String::from_utf8_lossy(&stderr.join().unwrap_or_default())
        .trim()
        .to_string();
    let took_too_long = || PluginError::CompileLimit {
        plugin: label.to_string(),
        what: format!("compiling it took longer than {:?}", limits.timeout),
        key: "compileTimeoutSeconds",
    };
    let Some(status) = status else {
        return Err(took_too_long());
    };
    if status.success() {
        return Ok(compiled);
    }
    // Under RLIMIT_AS an allocation fails: Rust aborts naming it, an mmap
    // in wasmtime reports ENOMEM, or the stack cannot grow and the process
    // dies of SIGSEGV without a word (a real stack overflow is reported by
    // Rust's handler, and safe code does not fault otherwise).
    let out_of_memory = said.contains("memory allocation of")
        || said.contains("Cannot allocate memory")
        || said.contains("out of memory")
        || (matches!(status.signal(), Some(libc::SIGSEGV | libc::SIGBUS)) && said.is_empty());
    let detail = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    Err(match (status.code(), status.signal()) {
        (Some(EXIT_INVALID), _) => invalid(said),
        (_, Some(libc::SIGXCPU)) => took_too_long(),
        _ if out_of_memory => needed_more_memory(),
        (Some(EXIT_HOST), _) => internal(format!("the compiler process failed{detail}")),
        // A crash (a panic, a stack overflow) on this input: refuse the file.
        _ => invalid(format!("the compiler crashed on it ({status}){detail}")),
    })
}

/// The compiler child (`wimguard internal-compile-plugin`): component
/// bytes on stdin, the compiled form on stdout; an invalid component exits
/// with [`EXIT_INVALID`] and the reason on stderr. Limits are set by the
/// parent before exec.
pub fn compiler_child() -> i32 {
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("cannot read the component: {e}");
        return EXIT_HOST;
    }
    let mut config = engine_config();
    // One function at a time: the compiled form does not depend on it, and
    // the memory limit then bounds the largest function, not a sum.
    config.parallel_compilation(false);
    let engine = match wasmtime::Engine::new(&config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot create the compiler: {e:#}");
            return EXIT_HOST;
        }
    };
    match engine.precompile_component(&bytes) {
        Ok(compiled) => match std::io::stdout().lock().write_all(&compiled) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cannot write the compiled form: {e}");
                EXIT_HOST
            }
        },
        Err(e) => {
            eprintln!("{e:#}");
            EXIT_INVALID
        }
    }
}
