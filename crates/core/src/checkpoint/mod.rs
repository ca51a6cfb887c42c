//! Safetensors checkpoints on disk: validated, memory-mapped reading and
//! streaming, atomically renamed writing.

mod destination;
pub mod header;
pub mod partials;
pub mod paths;
mod reader;
mod writer;

pub use destination::{check_single_file, write_file, write_file_with, FileWriter};
pub use paths::SideFile;
pub use reader::{Checkpoint, Layout, Shard, TensorInfo, INDEX_FILE};
pub use writer::{plan_shards, CheckpointWriter, OutputTensor, ShardSpec, WriterOptions};
