//! The tokenizer against Hugging Face's (tests/golden/forward/tokenizer):
//! SmolLM2-135M's byte-level BPE `tokenizer.json` must give exactly the ids
//! the reference library gave for each case (spaces, tabs, numbers, CJK,
//! emoji, Greek, code, the empty text), and text files must become
//! sequences as the README describes.

use std::path::PathBuf;

use shears::core::model::text::{read_text, sequences, TextTokenizer};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/forward/tokenizer")
}

#[test]
fn ids_equal_the_reference_library() {
    let tok = TextTokenizer::open(&dir()).unwrap();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(text).unwrap(), want, "{text:?}");
    }
    // SmolLM2 puts no BOS before text.
    assert_eq!(tok.bos, None);
}

#[test]
fn files_become_whole_sequences() {
    let tok = TextTokenizer::open(&dir()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.txt"), tmp.path().join("b.txt"));
    std::fs::write(&a, "The capital of France is Paris.").unwrap();
    std::fs::write(&b, "def f(x):\n    return x ** 2  # code\n").unwrap();
    // 7 + 15 tokens: three sequences of 7, the rest dropped.
    let ids = sequences(&tok, &[a.clone(), b.clone()], 7, 1000).unwrap();
    assert_eq!(ids.len(), 21);
    assert_eq!(&ids[..7], &[504, 3575, 282, 4649, 314, 7042, 30]);
    assert_eq!(&ids[7..9], &[1604, 275]);
    // --tokens caps whole sequences.
    assert_eq!(sequences(&tok, &[a.clone(), b], 7, 14).unwrap().len(), 14);
    // Too little text is refused naming the files.
    let e = sequences(&tok, std::slice::from_ref(&a), 64, 1000)
        .unwrap_err()
        .to_string();
    assert!(e.contains("a.txt") && e.contains("7 tokens"), "{e}");
    // Non-UTF-8 is refused with the byte offset.
    let bad = tmp.path().join("bad.txt");
    std::fs::write(&bad, b"ok text \xff more").unwrap();
    let e = read_text(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.txt") && e.contains("offset 8"), "{e}");
}
