//! Every `shaders/*.wgsl` parses and validates with naga, no GPU needed, and
//! the embedded sources in shears-kernels are exactly those files.

use std::path::PathBuf;

fn validate(name: &str, source: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{name}: parse error:\n{}", e.emit_to_string(source)))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| format!("{name}: validation error:\n{}", e.emit_to_string(source)))?;
    Ok(())
}

#[test]
fn every_compiled_module_validates() {
    for (family, source) in shears::kernels::source::ALL {
        validate(family, source).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn every_shader_file_is_parsed_and_validated() {
    // select.wgsl and mask.wgsl use the prelude score.wgsl declares, so a
    // file is parsed and validated by naga as part of each compiled module
    // that holds it; a file no module holds would never be checked.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wgsl") {
            let source = std::fs::read_to_string(&path).unwrap();
            let holders: Vec<_> = shears::kernels::source::ALL
                .iter()
                .filter(|(_, m)| m.contains(&source))
                .collect();
            assert!(
                !holders.is_empty(),
                "{} is not part of any compiled module",
                path.display()
            );
            for (family, module) in holders {
                validate(&format!("{} (in {family})", path.display()), module)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            seen += 1;
        }
    }
    assert!(seen >= 6, "only {seen} shaders found in {}", dir.display());
}

#[test]
fn the_validator_rejects_a_broken_module() {
    // The check above would pass vacuously if validation accepted anything.
    let err = validate("broken.wgsl", "@compute @workgroup_size(1) fn main( {").unwrap_err();
    assert!(err.contains("parse error"), "{err}");
    let err = validate(
        "unbound.wgsl",
        "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }",
    )
    .unwrap_err();
    assert!(err.contains("error"), "{err}");
}

#[test]
fn embedded_sources_end_with_their_family_file() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for (family, source) in shears::kernels::source::ALL {
        let on_disk = std::fs::read_to_string(dir.join(format!("{family}.wgsl"))).unwrap();
        assert!(
            source.ends_with(&on_disk),
            "{family}.wgsl differs from the embedded copy"
        );
    }
}
