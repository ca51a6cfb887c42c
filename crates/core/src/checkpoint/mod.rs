//! Safetensors checkpoints on disk: validated, memory-mapped reading and
//! streaming, atomically renamed writing.

pub mod header;
pub mod partials;
pub mod paths;
mod reader;
mod writer;

pub use reader::{Checkpoint, Layout, Shard, SideFile, TensorInfo, INDEX_FILE};
pub use writer::{
    check_single_file, plan_shards, write_file, CheckpointWriter, OutputTensor, ShardSpec,
    WriterOptions,
};
