//! What `--type` asks for: one tensor type for every 2-D weight, or one of
//! llama.cpp's K-quant mixes, whose per-tensor choices follow
//! `llama-quantize`'s rules for dense models (checked against llama.cpp
//! itself by scripts/kquant-check.py):
//!
//! * `output.weight` (the embeddings when they are tied) → Q6_K, or Q8_0
//!   when its rows do not split into 256s;
//! * `attn_v` → Q6_K in the layers `use_more_bits` picks (the first and
//!   last eighth and every third between) for Q4_K_M and Q5_K_M; Q5_K in
//!   the first four for Q4_K_S; in a 70B-shaped Llama (80 layers, grouped
//!   KV heads) Q4_K becomes Q5_K;
//! * `ffn_down` → Q6_K where `use_more_bits` picks for Q4_K_M and Q5_K_M,
//!   Q5_K in the first eighth for Q4_K_S;
//! * everything else the mix's base type (Q4_K or Q5_K);
//! * then, rows that do not split into the chosen type's blocks take its
//!   fallback (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, else F16).
//!
//! llama.cpp counts attn_v and ffn_down tensors in file order, so the
//! choice follows the order the tensors are written in.

use super::GgmlType;
use crate::model::config::{Family, ModelConfig};

/// A K-quant mix.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
}

/// What `--type` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Pure(GgmlType),
    Mix(Mix),
}

impl Target {
    /// Every name `--type` takes.
    pub fn names() -> Vec<&'static str> {
        let mut v: Vec<&str> = GgmlType::ALL
            .iter()
            .filter(|t| t.written())
            .map(|t| t.name())
            .collect();
        v.extend(["Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M"]);
        v
    }

    /// The target named `s` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        let mix = match s.to_ascii_uppercase().as_str() {
            "Q4_K_S" => Some(Mix::Q4_K_S),
            "Q4_K_M" => Some(Mix::Q4_K_M),
            "Q5_K_S" => Some(Mix::Q5_K_S),
            "Q5_K_M" => Some(Mix::Q5_K_M),
            _ => None,
        };
        match mix {
            Some(m) => Some(Target::Mix(m)),
            None => GgmlType::parse(s).map(Target::Pure),
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Pure(t) => t.name(),
            Target::Mix(Mix::Q4_K_S) => "Q4_K_S",
            Target::Mix(Mix::Q4_K_M) => "Q4_K_M",
            Target::Mix(Mix::Q5_K_S) => "Q5_K_S",
            Target::Mix(Mix::Q5_K_M) => "Q5_K_M",
        }
    }

    /// The type most weights get.
    pub fn base(self) -> GgmlType {
        match self {
            Target::Pure(t) => t,
            Target::Mix(Mix::Q4_K_S | Mix::Q4_K_M) => GgmlType::Q4_K,
            Target::Mix(Mix::Q5_K_S | Mix::Q5_K_M) => GgmlType::Q5_K,
        }
    }

    /// llama.cpp's `general.file_type` number.
    pub fn file_type(self) -> u32 {
        match self {
            Target::Pure(t) => super::llama::file_type(t),
            Target::Mix(Mix::Q4_K_S) => 14,
            Target::Mix(Mix::Q4_K_M) => 15,
            Target::Mix(Mix::Q5_K_S) => 16,
            Target::Mix(Mix::Q5_K_M) => 17,
        }
    }
}

/// llama-quantize's `use_more_bits`.
fn use_more_bits(i: usize, n: usize) -> bool {
    // C's remainder (truncating); the first test covers the negative side.
    i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64) % 3 == 2
}

/// llama.cpp's order of a model's tensors (its loader's map): by the layer
/// number in `blk.N.` (tensors outside the layers first), then by name.
/// llama-quantize counts the attn_v and ffn_down tensors in this order, so
/// the i-th is layer i's even when the checkpoint lists layer 10 before
/// layer 2 (as Hugging Face's alphabetical safetensors files do).
fn llama_cpp_order(tensors: &[(&str, &[u64])]) -> Vec<usize> {
    let layer = |name: &str| -> i64 {
        name.strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or(-1)
    };
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let (na, nb) = (tensors[a].0, tensors[b].0);
        (layer(na), na).cmp(&(layer(nb), nb))
    });
    order
}

/// The type of each tensor, given as (GGUF name, dimensions innermost
/// first) in the order they are written; 1-D tensors get F32.
pub fn choose(target: Target, cfg: &ModelConfig, tensors: &[(&str, &[u64])]) -> Vec<GgmlType> {
    let tied = !tensors.iter().any(|(n, _)| *n == "output.weight");
    let n_layers = cfg.layers;
    let n_wv = tensors
        .iter()
        .filter(|(n, _)| n.ends_with(".attn_v.weight"))
        .count();
    let seventy_b = cfg.family != Family::Qwen2
        && cfg.family != Family::Qwen3
        && cfg.layers == 80
        && cfg.heads != cfg.kv_heads;
    let (mut i_wv, mut i_down) = (0usize, 0usize);
    let base = target.base();
    let mut pick = |name: &str, dims: &[u64]| -> GgmlType {
        if dims.len() < 2 || !name.ends_with("weight") {
            return GgmlType::F32;
        }
        let nx = dims[0] as usize;
        let mut ty = base;
        let is_output = name == "output.weight" || (tied && name == "token_embd.weight");
        if let Target::Mix(mix) = target {
            if is_output {
                ty = if !nx.is_multiple_of(256) {
                    GgmlType::Q8_0
                } else {
                    GgmlType::Q6_K
                };
            } else if name.ends_with(".attn_v.weight") {
                match mix {
                    Mix::Q4_K_M | Mix::Q5_K_M if use_more_bits(i_wv, n_wv) => ty = GgmlType::Q6_K,
                    Mix::Q4_K_S if i_wv < 4 => ty = GgmlType::Q5_K,
                    _ => {}
                }
                if seventy_b && ty == GgmlType::Q4_K {
                    ty = GgmlType::Q5_K;
                }
                i_wv += 1;
            } else if name.ends_with(".ffn_down.weight") {
                match mix {
                    Mix::Q4_K_M | Mix::Q5_K_M if use_more_bits(i_down, n_layers) => {
                        ty = GgmlType::Q6_K
                    }
                    Mix::Q4_K_S if i_down < n_layers / 8 => ty = GgmlType::Q5_K,
                    _ => {}
                }
                i_down += 1;
            }
        }
        if ty.fits(nx) {
            ty
        } else {
            ty.fallback(nx)
        }
    };
    let mut types = vec![GgmlType::F32; tensors.len()];
    for i in llama_cpp_order(tensors) {
        types[i] = pick(tensors[i].0, tensors[i].1);
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_where_llama_cpp_puts_them() {
        // 32 layers: the first 4, the last 4, and every third from 6.
        let picked: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            picked,
            vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
    }

    #[test]
    fn layers_count_by_number_whatever_order_they_come_in() {
        // 30 layers listed as Hugging Face's alphabetical files list them
        // (blk.0, blk.1, blk.10, …, blk.19, blk.2, …): ffn_down and attn_v
        // get Q6_K in layers 0–2, 5, 8, …, 23 and 26–29, as llama-quantize
        // gives them (it counts in layer-number order).
        let cfg = ModelConfig::from_json(&serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 256,
            "intermediate_size": 512, "num_hidden_layers": 30,
            "num_attention_heads": 4, "vocab_size": 300, "rms_norm_eps": 1e-5
        }))
        .unwrap();
        let mut layers: Vec<String> = (0..30).map(|l| l.to_string()).collect();
        layers.sort();
        let names: Vec<String> = layers
            .iter()
            .flat_map(|l| ["attn_v", "ffn_down", "ffn_up"].map(|t| format!("blk.{l}.{t}.weight")))
            .chain(["output.weight".to_string()])
            .collect();
        let dims = [256u64, 256];
        let listed: Vec<(&str, &[u64])> = names.iter().map(|n| (n.as_str(), &dims[..])).collect();
        let types = choose(Target::Mix(Mix::Q4_K_M), &cfg, &listed);
        let want: Vec<usize> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(want, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
        for kind in ["attn_v", "ffn_down"] {
            let mut got: Vec<usize> = names
                .iter()
                .zip(&types)
                .filter(|(n, t)| n.contains(kind) && **t == GgmlType::Q6_K)
                .map(|(n, _)| n.split('.').nth(1).unwrap().parse().unwrap())
                .collect();
            got.sort();
            assert_eq!(got, want, "{kind}");
        }
        assert!(names
            .iter()
            .zip(&types)
            .all(|(n, t)| !n.contains("ffn_up") || *t == GgmlType::Q4_K));
    }

    #[test]
    fn names_parse() {
        assert_eq!(Target::parse("q4_k_m"), Some(Target::Mix(Mix::Q4_K_M)));
        assert_eq!(Target::parse("Q8_0"), Some(Target::Pure(GgmlType::Q8_0)));
        assert_eq!(Target::parse("Q3_K"), None);
    }
}
