//! Training: the operations a training step is made of ([`Device`], with
//! the CPU reference in [`crate::reference::train`]), data sets for classifiers, MLP
//! classifiers trained on labels or distilled from a teacher (Hinton et al.
//! 2015), and layer-wise distillation of compressed linear layers
//! (ZeroQuant's LKD). The loops are generic over [`Device`], so the CPU
//! reference and the GPU run the same steps in the same order.

pub mod block;
pub mod block_device;
mod block_ops;
pub mod block_pass;
pub mod blockwise;
pub mod data;
pub mod device;
pub mod layerwise;
pub mod metrics;
pub mod mlp;

pub use data::{stratified_split, Dataset, Split};
pub use device::{AdamStep, Device, GridShape, Levels};
pub use layerwise::{
    distill_layer, held_out_error, Grid, LayerProblem, LkdConfig, LkdResult, Targets,
};
pub use metrics::{evaluate, predict, Metrics};
pub use mlp::{train, Mlp, TrainConfig, TrainLog};
