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
    tensors
        .iter()
        .map(|&(name, dims)| {
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
                        Mix::Q4_K_M | Mix::Q5_K_M if use_more_bits(i_wv, n_wv) => {
                            ty = GgmlType::Q6_K
                        }
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
        })
        .collect()
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
    fn names_parse() {
        assert_eq!(Target::parse("q4_k_m"), Some(Target::Mix(Mix::Q4_K_M)));
        assert_eq!(Target::parse("Q8_0"), Some(Target::Pure(GgmlType::Q8_0)));
        assert_eq!(Target::parse("Q3_K"), None);
    }
}
