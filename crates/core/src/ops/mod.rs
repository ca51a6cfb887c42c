//! The traits of the kernel families and the types their backends share.
//! (Importance, select, mask and matmul keep theirs beside their CPU
//! reference for now; quant is the first family here.)

pub mod float;
pub mod quant;
