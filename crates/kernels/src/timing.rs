//! GPU timestamps around compute passes, for `shears bench`: when the
//! adapter has `TIMESTAMP_QUERY`, [`GpuContext::dispatch`] writes a
//! timestamp at the start and the end of each pass while timing is on, and
//! [`GpuContext::gpu_time`] sums the passes' durations.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Passes one timing window records (two queries each, within wgpu's
/// 4096 queries per set).
pub(crate) const MAX_PASSES: u32 = 2048;

/// The query set and its resolve buffer.
pub(crate) struct GpuTimer {
    pub(crate) queries: wgpu::QuerySet,
    pub(crate) resolve: wgpu::Buffer,
    /// Whether passes are being timed.
    pub(crate) on: AtomicBool,
    /// Passes recorded since timing started (may run past MAX_PASSES: the
    /// window then measured only part of the work).
    pub(crate) passes: AtomicU32,
}

impl GpuTimer {
    pub(crate) fn new(device: &wgpu::Device) -> GpuTimer {
        GpuTimer {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("pass timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * MAX_PASSES,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamp resolve"),
                size: 16 * MAX_PASSES as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            on: AtomicBool::new(false),
            passes: AtomicU32::new(0),
        }
    }

    /// The query pair of the next pass, while timing and room remain.
    pub(crate) fn next_pair(&self) -> Option<u32> {
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        let i = self.passes.fetch_add(1, Ordering::Relaxed);
        (i < MAX_PASSES).then_some(i)
    }
}
