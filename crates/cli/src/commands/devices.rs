//! `shears devices`: every adapter wgpu finds, with what shears uses of it.

use anyhow::Result;

use crate::args::DevicesArgs;
use crate::output::{human_bytes, Out};

pub fn run(args: &DevicesArgs, out: &mut Out) -> Result<()> {
    let adapters = shears_kernels::list_adapters()?;
    if args.json {
        out.answer(&serde_json::to_string_pretty(&adapters)?);
        return Ok(());
    }
    if adapters.is_empty() {
        out.answer("no GPU adapter found; shears will use the CPU path");
        out.answer("(on Linux without a GPU, install Mesa's lavapipe: apt-get install mesa-vulkan-drivers)");
        return Ok(());
    }
    for (i, a) in adapters.iter().enumerate() {
        out.answer(&format!("[{i}] {}", a.name));
        out.answer(&format!(
            "    backend      {} ({})",
            a.backend, a.device_type
        ));
        out.answer(&format!("    driver       {} {}", a.driver, a.driver_info));
        out.answer(&format!(
            "    compute      {}",
            if a.compute {
                "yes"
            } else {
                "no (shears cannot use it)"
            }
        ));
        out.answer(&format!(
            "    binding      {} per storage binding, {} per buffer",
            human_bytes(a.max_storage_buffer_binding_size),
            human_bytes(a.max_buffer_size)
        ));
        out.answer(&format!(
            "    workgroups   {} per dimension, {} invocations, {} shared",
            a.max_compute_workgroups_per_dimension,
            a.max_compute_invocations_per_workgroup,
            human_bytes(a.max_compute_workgroup_storage_size as u64)
        ));
        out.answer(&format!(
            "    alignment    {} bytes for storage offsets",
            a.min_storage_buffer_offset_alignment
        ));
        let features = if a.features.is_empty() {
            "none of shader-f16, subgroup, timestamp-query, shader-int64".to_string()
        } else {
            a.features.join(", ")
        };
        out.answer(&format!("    features     {features}"));
    }
    Ok(())
}
