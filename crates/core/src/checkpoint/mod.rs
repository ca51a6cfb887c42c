//! Safetensors checkpoints on disk: validated, memory-mapped reading and
//! streaming, atomically renamed writing.

pub mod header;
mod reader;
mod writer;

pub use reader::{Checkpoint, Layout, Shard, TensorInfo, INDEX_FILE};
pub use writer::{
    plan_shards, write_file, CheckpointWriter, OutputTensor, ShardSpec, WriterOptions,
};
