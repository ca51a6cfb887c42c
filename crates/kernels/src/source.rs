//! The WGSL sources of every kernel family, embedded at build time. One file
//! per family under `shaders/`; no WGSL is generated from Rust strings.

/// `shaders/importance.wgsl`.
pub const IMPORTANCE: &str = include_str!("../../../shaders/importance.wgsl");

/// Every shader, by family name, for validation and the pipeline cache.
pub const ALL: &[(&str, &str)] = &[("importance", IMPORTANCE)];
