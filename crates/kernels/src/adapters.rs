//! Adapter discovery: which graphics APIs to ask (`SHEARS_GRAPHICS_API`), every
//! adapter they offer (`shears devices`), and the one a run takes
//! (`SHEARS_ADAPTER`, else discrete before integrated, virtual, software).

use crate::{Error, Result};

/// What `shears devices` shows for one adapter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    /// Whether the adapter runs compute shaders (shears needs them).
    pub compute: bool,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub min_storage_buffer_offset_alignment: u32,
    /// Optional features shears can use, when present.
    pub features: Vec<String>,
}

/// Optional features shears looks for.
const USEFUL_FEATURES: &[(wgpu::Features, &str)] = &[
    (wgpu::Features::SHADER_F16, "shader-f16"),
    (wgpu::Features::SUBGROUP, "subgroup"),
    (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
    (wgpu::Features::SHADER_INT64, "shader-int64"),
];

fn summarize(adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let features = adapter.features();
    AdapterSummary {
        name: info.name,
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver,
        driver_info: info.driver_info,
        compute: adapter
            .get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS),
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_buffer_size: limits.max_buffer_size,
        max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        min_storage_buffer_offset_alignment: limits.min_storage_buffer_offset_alignment,
        features: USEFUL_FEATURES
            .iter()
            .filter(|(f, _)| features.contains(*f))
            .map(|(_, n)| n.to_string())
            .collect(),
    }
}

/// Every compute-capable adapter of `backends` (Vulkan, Metal, DX12 and GL
/// alike), with its summary: what `shears bench` measures one by one.
pub fn compute_adapters(backends: wgpu::Backends) -> Vec<(wgpu::Adapter, AdapterSummary)> {
    let inst = instance(backends);
    pollster::block_on(inst.enumerate_adapters(backends))
        .into_iter()
        .map(|a| {
            let s = summarize(&a);
            (a, s)
        })
        .filter(|(_, s)| s.compute)
        .collect()
}

/// Backends named by `SHEARS_GRAPHICS_API` (vulkan, metal, dx12, gl; several
/// may be given with commas), or every backend.
pub fn backends_from_env() -> Result<wgpu::Backends> {
    match std::env::var("SHEARS_GRAPHICS_API") {
        Ok(v) => parse_backends(&v)
            .map_err(|e| Error::NoAdapter(format!("SHEARS_GRAPHICS_API={v}: {e}"))),
        Err(_) => Ok(wgpu::Backends::all()),
    }
}

/// The graphics APIs named in `v`: vulkan, metal, dx12, gl, with commas,
/// or `all`.
pub fn parse_backends(v: &str) -> std::result::Result<wgpu::Backends, String> {
    let mut out = wgpu::Backends::empty();
    for part in v.split(',').map(|s| s.trim().to_ascii_lowercase()) {
        out |= match part.as_str() {
            "all" => wgpu::Backends::all(),
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "" => continue,
            other => {
                return Err(format!(
                    "{other} is not one of vulkan, metal, dx12, gl, all"
                ))
            }
        };
    }
    Ok(out)
}

pub(crate) fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    desc.flags = wgpu::InstanceFlags::empty().with_env();
    wgpu::Instance::new(desc)
}

/// Every adapter the selected backends expose, with what shears uses of it.
pub fn list_adapters() -> Result<Vec<AdapterSummary>> {
    let inst = instance(backends_from_env()?);
    let adapters = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()));
    Ok(adapters.iter().map(summarize).collect())
}

fn type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// The adapter shears would use: compute-capable, on Vulkan, Metal or DX12
/// (OpenGL when none of those has one) unless `SHEARS_GRAPHICS_API` says
/// otherwise, matching
/// `SHEARS_ADAPTER` (a case-insensitive name substring) when set, high
/// performance first (discrete, integrated, virtual, software).
pub fn pick_adapter() -> Result<wgpu::Adapter> {
    let compute = |backends: wgpu::Backends| -> Vec<wgpu::Adapter> {
        let inst = instance(backends);
        pollster::block_on(inst.enumerate_adapters(backends))
            .into_iter()
            .filter(|a| {
                a.get_downlevel_capabilities()
                    .flags
                    .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
            })
            .collect()
    };
    let mut adapters = match std::env::var_os("SHEARS_GRAPHICS_API") {
        Some(_) => compute(backends_from_env()?),
        // Vulkan, Metal and DX12 first; OpenGL only when none of them has
        // an adapter (GL drivers are slower and noisier to probe).
        None => {
            let primary = compute(wgpu::Backends::PRIMARY);
            if primary.is_empty() {
                compute(wgpu::Backends::GL)
            } else {
                primary
            }
        }
    };
    if adapters.is_empty() {
        return Err(Error::NoAdapter(
            "no compute-capable adapter found (install a Vulkan, Metal or DX12 driver; \
             on Linux without a GPU, Mesa's lavapipe: mesa-vulkan-drivers)"
                .into(),
        ));
    }
    if let Ok(want) = std::env::var("SHEARS_ADAPTER") {
        let want_l = want.to_lowercase();
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        adapters.retain(|a| a.get_info().name.to_lowercase().contains(&want_l));
        if adapters.is_empty() {
            return Err(Error::NoAdapter(format!(
                "SHEARS_ADAPTER={want} matches none of: {}",
                names.join(", ")
            )));
        }
    }
    adapters.sort_by_key(|a| type_rank(a.get_info().device_type));
    Ok(adapters.remove(0))
}
