//! Property tests over generated safetensors headers, with the shapes a
//! fuzzer rarely finds by itself: zero-sized, huge, and overflowing
//! (products past 2^64). Whatever the header says, `shears quantize` and
//! `shears inspect --stats` exit 0 or 2 (never a panic or an abort from an
//! allocation sized by the header), and leave no partial output behind.

use std::path::Path;

use proptest::prelude::*;

mod common;

use common::run;

/// Dimensions that matter: small ones, 0, and sizes around 2^31, 2^32,
/// 2^53, 2^63 and 2^64 − 1.
fn dim() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..=9,
        2 => Just(0u64),
        1 => Just(128u64),
        1 => Just(1u64 << 31),
        1 => Just(1u64 << 32),
        1 => Just(1u64 << 33),
        1 => Just(1u64 << 53),
        1 => Just(1u64 << 63),
        1 => Just(u64::MAX),
    ]
}

/// Any rank up to 3, with 2-D shapes holding a 0 beside any other
/// dimension half the time (what the default rule selects for quantizing).
fn shape() -> impl Strategy<Value = Vec<u64>> {
    prop_oneof![
        2 => prop::collection::vec(dim(), 0..=3),
        1 => dim().prop_map(|d| vec![0, d]),
        1 => dim().prop_map(|d| vec![d, 0]),
    ]
}

#[derive(Debug, Clone)]
struct Entry {
    name: &'static str,
    dtype: &'static str,
    shape: Vec<u64>,
    /// Offsets: the ones the shape implies (when they fit) or these.
    honest: bool,
    offsets: (u64, u64),
}

fn entry(name: &'static str) -> impl Strategy<Value = Entry> {
    (
        prop_oneof![
            Just("F32"),
            Just("F16"),
            Just("BF16"),
            Just("I8"),
            Just("I32")
        ],
        shape(),
        any::<bool>(),
        (0u64..64, 0u64..64),
    )
        .prop_map(move |(dtype, shape, honest, offsets)| Entry {
            name,
            dtype,
            shape,
            honest,
            offsets,
        })
}

fn elem_bytes(dtype: &str) -> u64 {
    match dtype {
        "F32" | "I32" => 4,
        "F16" | "BF16" => 2,
        _ => 1,
    }
}

/// The header JSON and the length of its data section.
fn header(entries: &[Entry]) -> (String, u64) {
    let mut at = 0u64;
    let mut parts = Vec::new();
    for e in entries {
        let size = e
            .shape
            .iter()
            .try_fold(elem_bytes(e.dtype), |a, &d| a.checked_mul(d));
        let (start, end) = match size {
            Some(n) if e.honest && n <= 4096 => (at, at + n),
            _ => (e.offsets.0, e.offsets.0 + e.offsets.1),
        };
        at = at.max(end);
        let shape: Vec<String> = e.shape.iter().map(u64::to_string).collect();
        parts.push(format!(
            r#""{}":{{"dtype":"{}","shape":[{}],"data_offsets":[{start},{end}]}}"#,
            e.name,
            e.dtype,
            shape.join(",")
        ));
    }
    (format!("{{{}}}", parts.join(",")), at)
}

fn write_model(dir: &Path, entries: &[Entry]) {
    let (json, data_len) = header(entries);
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    bytes.extend((0..data_len).map(|i| (i * 37 % 251) as u8 & 0x3f));
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
}

fn check_exit(args: &[&str]) -> Result<i32, TestCaseError> {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    let code = o.status.code();
    prop_assert!(
        matches!(code, Some(0) | Some(2)),
        "{args:?}: exit {code:?} (killed by a signal if None): {err}"
    );
    prop_assert!(!err.contains("panicked"), "{args:?}: {err}");
    Ok(code.unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_header_is_refused_or_handled(
        a in entry("a.weight"),
        b in entry("b.weight"),
        c in entry("c.bias"),
        scheme in prop_oneof![Just("w8a16"), Just("w4a16-asym"), Just("w8a8")],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        std::fs::create_dir(&m).unwrap();
        write_model(&m, &[a, b, c]);
        let out = dir.path().join("q");
        let (ms, os) = (m.to_str().unwrap(), out.to_str().unwrap());
        let code = check_exit(&["quantize", ms, "-o", os, "--scheme", scheme])?;
        check_exit(&["inspect", ms, "--stats"])?;
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("shears-partial"))
            .collect();
        prop_assert!(left.is_empty(), "partial outputs left: {left:?}");
        prop_assert_eq!(out.exists(), code == 0);
    }
}
