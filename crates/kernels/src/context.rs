//! The GPU runtime: device creation with the adapter's own limits (the
//! adapter is chosen in [`crate::adapters`]), the pipeline cache, chunk
//! sizing and the one readback helper.
//! Device setup is kept apart from the work so tests can pass their own
//! context (see `GpuContext::from_adapter`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use crate::adapters::{
    backends_from_env, compute_adapters, list_adapters, parse_backends, pick_adapter,
    AdapterSummary,
};
use crate::{Error, Result};

/// Bytes one upload window may hold unless `SHEARS_CHUNK_MIB` says
/// otherwise; the chunk is the smaller of this and the device's binding and
/// buffer limits. It bounds host memory on unified-memory and software
/// adapters, where device buffers live in RAM.
pub const DEFAULT_WINDOW_BYTES: u64 = 64 << 20;

#[derive(Clone, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
    entry: &'static str,
    /// Override constants as (name, f64 bits).
    constants: Vec<(&'static str, u64)>,
}

/// One opened device, shared by every kernel. Created once per process.
pub struct GpuContext {
    pub info: wgpu::AdapterInfo,
    /// The limits the device was granted (the adapter's own).
    pub limits: wgpu::Limits,
    /// The features the adapter offers.
    pub features: wgpu::Features,
    device: wgpu::Device,
    queue: wgpu::Queue,
    chunk_bytes: u64,
    first_error: Arc<Mutex<Option<String>>>,
    modules: Mutex<HashMap<&'static str, Arc<wgpu::ShaderModule>>>,
    layouts: Mutex<HashMap<&'static str, Arc<wgpu::BindGroupLayout>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    /// Wall time spent in [`GpuContext::upload`] and
    /// [`GpuContext::read_back`], in nanoseconds (`shears bench` reports
    /// it apart from the rest of a call).
    transfer_ns: [std::sync::atomic::AtomicU64; 2],
    /// Pass timestamps, when the adapter has TIMESTAMP_QUERY.
    timer: Option<crate::timing::GpuTimer>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .field("chunk_bytes", &self.chunk_bytes)
            .finish()
    }
}

impl GpuContext {
    /// Opens the adapter [`pick_adapter`] chooses.
    pub fn new() -> Result<Self> {
        Self::from_adapter(pick_adapter()?)
    }

    /// Opens a device on `adapter`, asking for its own limits.
    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features();
        let desc = wgpu::DeviceDescriptor {
            label: Some("shears device"),
            // Timestamps only: shears' kernels need no optional feature.
            required_features: features & wgpu::Features::TIMESTAMP_QUERY,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::MemoryUsage,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            }
        })?;
        let first_error: Arc<Mutex<Option<String>>> = Arc::default();
        let sink = first_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            tracing::error!("wgpu: {e}");
            slot.get_or_insert_with(|| e.to_string());
        }));
        let window = std::env::var("SHEARS_CHUNK_MIB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|m| m << 20)
            .unwrap_or(DEFAULT_WINDOW_BYTES);
        let chunk_bytes = window
            .min(limits.max_storage_buffer_binding_size)
            .min(limits.max_buffer_size);
        let ctx = GpuContext {
            info,
            limits,
            features,
            device,
            queue,
            chunk_bytes: 0,
            first_error,
            modules: Mutex::default(),
            layouts: Mutex::default(),
            pipelines: Mutex::default(),
            transfer_ns: Default::default(),
            timer: None,
        };
        let mut ctx = ctx;
        if features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            ctx.timer = Some(crate::timing::GpuTimer::new(&ctx.device));
        }
        Ok(ctx.with_chunk_bytes(chunk_bytes))
    }

    /// Caps the bytes of one chunk (tests force small chunks with this).
    /// Rounded down to the storage offset alignment, never above the
    /// device's binding limit.
    pub fn with_chunk_bytes(mut self, bytes: u64) -> Self {
        let align = self.limits.min_storage_buffer_offset_alignment.max(4) as u64;
        let cap = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        // Shader indices are u32: keep every chunk well below 2^31 bytes.
        let cap = cap.min(1 << 31);
        self.chunk_bytes = (bytes.min(cap) / align * align).max(align);
        self
    }

    /// Largest number of bytes one dispatch binds.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes
    }

    /// "name (backend, device type)", for logs and reports.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Most workgroups one dispatch dimension may have.
    pub fn max_groups(&self) -> u32 {
        self.limits.max_compute_workgroups_per_dimension.max(1)
    }

    /// Dispatch dimensions for `workgroups` workgroups: (n, 1, 1) while
    /// one dimension holds them, else a 2-D grid (x fastest); shaders
    /// rebuild the index as (wid.y · nwg.x + wid.x) and skip the excess.
    pub fn grid_2d(&self, workgroups: usize) -> (u32, u32, u32) {
        let wgs = workgroups.max(1);
        let max = self.max_groups() as usize;
        if wgs <= max {
            (wgs as u32, 1, 1)
        } else {
            (max as u32, wgs.div_ceil(max) as u32, 1)
        }
    }

    /// Returns the first uncaptured wgpu error since the device opened.
    pub fn check(&self, what: &str) -> Result<()> {
        let slot = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(message) => Err(Error::Runtime {
                what: what.to_string(),
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }

    /// A bind group layout, created once per name.
    pub fn layout(
        &self,
        name: &'static str,
        entries: &[wgpu::BindGroupLayoutEntry],
    ) -> Arc<wgpu::BindGroupLayout> {
        let mut map = self.layouts.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name)
            .or_insert_with(|| {
                Arc::new(
                    self.device
                        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                            label: Some(name),
                            entries,
                        }),
                )
            })
            .clone()
    }

    fn module(
        &self,
        shader: &'static str,
        source: &'static str,
    ) -> Result<Arc<wgpu::ShaderModule>> {
        let mut map = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.get(shader) {
            return Ok(m.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Shader {
                shader: format!("shaders/{shader}.wgsl"),
                message: e.to_string(),
            });
        }
        let module = Arc::new(module);
        map.insert(shader, module.clone());
        Ok(module)
    }

    /// The compute pipeline for `entry` of `shader` with these override
    /// constants, built once and cached.
    pub fn pipeline(
        &self,
        shader: &'static str,
        source: &'static str,
        entry: &'static str,
        layout: &wgpu::BindGroupLayout,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = PipelineKey {
            shader,
            entry,
            constants: constants.iter().map(|(n, v)| (*n, v.to_bits())).collect(),
        };
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let module = self.module(shader, source)?;
        let label = format!("{shader}::{entry}");
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pl = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: &[Some(layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&pl),
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Shader {
                shader: format!("shaders/{shader}.wgsl, entry point {entry}"),
                message: e.to_string(),
            });
        }
        let pipeline = Arc::new(pipeline);
        self.pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// A bind group layout of buffers only, bindings 0, 1, … in order,
    /// created once per name.
    pub fn buffer_layout(
        &self,
        name: &'static str,
        types: &[wgpu::BufferBindingType],
    ) -> Arc<wgpu::BindGroupLayout> {
        let entries: Vec<wgpu::BindGroupLayoutEntry> = types
            .iter()
            .enumerate()
            .map(|(i, &ty)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        self.layout(name, &entries)
    }

    /// Records one dispatch of `pipeline` over `groups` workgroups and
    /// submits it; returns the submission to wait on.
    pub fn dispatch(
        &self,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        bind: &wgpu::BindGroup,
        groups: (u32, u32, u32),
    ) -> wgpu::SubmissionIndex {
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        {
            let pair = self.timer.as_ref().and_then(|t| t.next_pair());
            let writes = match (pair, &self.timer) {
                (Some(i), Some(t)) => Some(wgpu::ComputePassTimestampWrites {
                    query_set: &t.queries,
                    beginning_of_pass_write_index: Some(2 * i),
                    end_of_pass_write_index: Some(2 * i + 1),
                }),
                _ => None,
            };
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes: writes,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        }
        self.queue.submit([enc.finish()])
    }

    /// A buffer with a label.
    pub fn buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(4).next_multiple_of(4),
            usage,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer of `size` bytes that can be written from the host,
    /// with `extra` usages (COPY_SRC for outputs read back).
    pub fn storage(&self, label: &str, size: usize, extra: wgpu::BufferUsages) -> wgpu::Buffer {
        self.buffer(
            label,
            size as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | extra,
        )
    }

    /// A uniform buffer of `size` bytes written from the host.
    pub fn uniform(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.buffer(
            label,
            size,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )
    }

    /// Waits until `submission` (or all work, when `None`) has finished.
    pub fn wait(&self, submission: Option<wgpu::SubmissionIndex>) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: submission,
                timeout: None,
            })
            .map_err(|e| Error::Runtime {
                what: "wait".into(),
                message: e.to_string(),
            })?;
        self.check("execution")
    }

    /// Whether compute passes can be timed by GPU timestamps.
    pub fn has_timestamps(&self) -> bool {
        self.timer.is_some()
    }

    /// Starts timing compute passes with GPU timestamps; false when the
    /// adapter has no TIMESTAMP_QUERY.
    pub fn start_gpu_timing(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        match &self.timer {
            Some(t) => {
                t.passes.store(0, Relaxed);
                t.on.store(true, Relaxed);
                true
            }
            None => false,
        }
    }

    /// Stops timing and returns the summed duration of the passes since
    /// [`GpuContext::start_gpu_timing`] (the work must have finished), or
    /// None without timestamps or when more passes ran than one window
    /// records.
    pub fn gpu_time(&self) -> Result<Option<std::time::Duration>> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(t) = &self.timer else {
            return Ok(None);
        };
        t.on.store(false, Relaxed);
        let n = t.passes.load(Relaxed);
        if n == 0 || n > crate::timing::MAX_PASSES {
            return Ok(None);
        }
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("resolve timestamps"),
            });
        enc.resolve_query_set(&t.queries, 0..2 * n, &t.resolve, 0);
        self.queue.submit([enc.finish()]);
        let bytes = self.read_back_untimed(&t.resolve, 0, 16 * n as u64)?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let total: u64 = ticks
            .chunks_exact(2)
            .map(|p| p[1].saturating_sub(p[0]))
            .sum();
        let ns = total as f64 * self.queue.get_timestamp_period() as f64;
        Ok(Some(std::time::Duration::from_nanos(ns as u64)))
    }

    /// The wall time spent uploading (host → device writes) and reading
    /// back (device → host, waiting included) since the last call, and
    /// restarts both counts.
    pub fn take_transfer_times(&self) -> (std::time::Duration, std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let ns = |i: usize| std::time::Duration::from_nanos(self.transfer_ns[i].swap(0, Relaxed));
        (ns(0), ns(1))
    }

    fn count_transfer(&self, which: usize, since: std::time::Instant) {
        self.transfer_ns[which].fetch_add(
            since.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Copies `size` bytes at `offset` of `buffer` (which needs COPY_SRC)
    /// back to the host. The only place in shears that maps a buffer.
    pub fn read_back(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        let t = std::time::Instant::now();
        let out = self.read_back_untimed(buffer, offset, size);
        self.count_transfer(1, t);
        out
    }

    fn read_back_untimed(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        if size == 0 {
            return Ok(Vec::new());
        }
        let padded = size.next_multiple_of(4);
        let staging = self.buffer(
            "readback staging",
            padded,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        enc.copy_buffer_to_buffer(buffer, offset, &staging, 0, padded);
        let idx = self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait(Some(idx))?;
        rx.recv()
            .map_err(|_| Error::Runtime {
                what: "readback".into(),
                message: "map callback never ran".into(),
            })?
            .map_err(|e| Error::Runtime {
                what: "readback".into(),
                message: e.to_string(),
            })?;
        let out = {
            let view = staging.get_mapped_range(..).map_err(|e| Error::Runtime {
                what: "readback".into(),
                message: e.to_string(),
            })?;
            view[..size as usize].to_vec()
        };
        staging.unmap();
        Ok(out)
    }

    /// A bandwidth yardstick: copies `bytes` between two device buffers,
    /// `runs` times, in one submission each, and returns the wall time of
    /// each (from submit to completion).
    pub fn time_buffer_copy(&self, bytes: usize, runs: usize) -> Result<Vec<std::time::Duration>> {
        let size = (bytes.max(4) as u64).next_multiple_of(4);
        let src = self.buffer("copy src", size, wgpu::BufferUsages::COPY_SRC);
        let dst = self.buffer("copy dst", size, wgpu::BufferUsages::COPY_DST);
        let mut out = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = std::time::Instant::now();
            let mut enc = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("copy yardstick"),
                });
            enc.copy_buffer_to_buffer(&src, 0, &dst, 0, size);
            let idx = self.queue.submit([enc.finish()]);
            self.wait(Some(idx))?;
            out.push(t.elapsed());
        }
        Ok(out)
    }

    /// Writes `bytes` at `offset` of `buffer`, padding a ragged tail with
    /// zeros to the 4-byte copy alignment.
    pub fn upload(&self, buffer: &wgpu::Buffer, offset: u64, bytes: &[u8]) {
        let t = std::time::Instant::now();
        let whole = bytes.len() / 4 * 4;
        if whole > 0 {
            self.queue.write_buffer(buffer, offset, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue
                .write_buffer(buffer, offset + whole as u64, &tail);
        }
        self.count_transfer(0, t);
    }
}

/// A bind group entry binding the whole of `buffer`.
pub(crate) fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}
