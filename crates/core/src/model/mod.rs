//! Running a decoder-only model: its config, its RoPE tables, its weights
//! one decoder layer at a time, and the layer-by-layer runner that
//! calibration and evaluation use.

pub mod collect;
pub mod config;
pub mod eval;
pub mod rope;

pub use config::{Family, ModelConfig, RopeScaling};
pub mod runner;
pub mod text;
pub mod weights;

pub use runner::{Capture, NoCapture, Runner};
pub use weights::{LayerWeights, Linear, Weights};
