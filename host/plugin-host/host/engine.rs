//! The one wasmtime engine every plugin runs on, and its epoch ticker.

use super::*;

/// How often the background thread advances the engine's epoch. Deadlines
/// are measured in these ticks, so they are accurate to about one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The settings of the plugin engine; the compiler child
/// (`super::compile`) uses the same, so its output loads here.
pub(crate) fn engine_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config
}

/// The one engine every plugin runs on (created on first use, with its
/// epoch ticker thread).
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let engine = Engine::new(&engine_config()).expect("the wasmtime engine configuration is valid");
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                ticker.increment_epoch();
            })
            .expect("spawning the wasm epoch thread");
        engine
    })
}
