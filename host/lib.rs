pub mod api;
pub mod apply;
pub mod capture;
pub mod cli;
pub mod config;
pub mod fsutil;
pub mod wim;
