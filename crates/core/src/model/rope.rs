//! RoPE tables: cos and sin of position × frequency, computed in f32 the way
//! transformers computes them (so hidden states agree to f32 rounding).

use super::config::{ModelConfig, RopeScaling};

/// cos and sin for positions 0..len, `half` = head_dim/2 frequencies each.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeTable {
    pub half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// The table of `cfg` for positions 0..len.
    pub fn new(cfg: &ModelConfig, len: usize) -> Self {
        let freqs = inv_freq(cfg);
        let half = freqs.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for pos in 0..len {
            for &f in &freqs {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        RopeTable { half, cos, sin }
    }

    /// Positions the table covers.
    pub fn len(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    /// Whether it covers no position.
    pub fn is_empty(&self) -> bool {
        self.cos.is_empty()
    }

    /// cos of each frequency at `pos`.
    pub fn cos(&self, pos: usize) -> &[f32] {
        &self.cos[pos * self.half..(pos + 1) * self.half]
    }

    /// sin of each frequency at `pos`.
    pub fn sin(&self, pos: usize) -> &[f32] {
        &self.sin[pos * self.half..(pos + 1) * self.half]
    }
}

/// The inverse frequencies θ^(−2i/d), i < d/2, after the config's scaling.
pub fn inv_freq(cfg: &ModelConfig) -> Vec<f32> {
    let d = cfg.head_dim;
    let base: Vec<f32> = (0..d / 2)
        .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f32 / d as f32))
        .collect();
    match cfg.rope_scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: ctx,
        } => {
            // Wavelengths longer than ctx/low are slowed by `factor`, those
            // shorter than ctx/high kept, the band between blended.
            let (low_wavelen, high_wavelen) = (ctx / low, ctx / high);
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (ctx / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}
