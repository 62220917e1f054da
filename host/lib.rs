pub mod apply;
pub mod capture;
pub mod cli;
pub mod fsutil;
pub mod wim;
