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
fn every_shader_file_parses() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wgsl") {
            // select.wgsl and mask.wgsl use the prelude score.wgsl declares,
            // so files are validated as compiled (above); here each parses
            // as part of at least one compiled module.
            let source = std::fs::read_to_string(&path).unwrap();
            assert!(
                shears::kernels::source::ALL
                    .iter()
                    .any(|(_, m)| m.contains(&source)),
                "{} is not part of any compiled module",
                path.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 1, "no shaders found in {}", dir.display());
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

#[test]
fn a_broken_shader_is_reported_with_its_name() {
    let err = validate("broken.wgsl", "fn main( { }").unwrap_err();
    assert!(err.contains("broken.wgsl"), "{err}");
}
