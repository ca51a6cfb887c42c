//! One module per subcommand.

pub mod bench;
pub mod calibrate;
pub mod calibration;
pub mod compress;
pub mod decompress;
pub mod devices;
pub mod distill;
pub mod eval;
pub mod evaluate;
pub mod generate;
pub mod gguf;
pub mod inspect;
pub mod prune;
pub mod quantize;
pub mod train;
