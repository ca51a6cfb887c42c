//! The layer-by-layer runner: the hidden states of every sequence are kept
//! and one decoder layer's weights are resident at a time, so calibration
//! and evaluation run models larger than memory. Within a layer, sequences
//! go through in chunks of about [`CHUNK_TOKENS`] tokens, which bounds the
//! intermediate activations (the MLP's are the widest).

use super::config::ModelConfig;
use super::rope::RopeTable;
use super::weights::{LayerWeights, Linear, Weights};
use crate::reference::forward::{AttnShape, Forward};
use crate::{Error, Result};

/// Tokens per chunk of a layer's work (whole sequences; at least one).
pub const CHUNK_TOKENS: usize = 1024;

/// Receives the inputs of each decoder linear layer as a pass reaches it.
pub trait Capture {
    /// `names` are the weights that read these rows (q/k/v share one input,
    /// gate/up another); `x` is [rows, in].
    fn inputs(&mut self, names: &[String], x: &[f32], rows: usize) -> Result<()>;

    /// Called once decoder layer `layer` has run over every sequence.
    fn layer_done(&mut self, _layer: usize) -> Result<()> {
        Ok(())
    }

    /// Whether inputs are wanted at all (the runner skips the names).
    fn wanted(&self) -> bool {
        true
    }
}

/// A pass that captures nothing.
pub struct NoCapture;

impl Capture for NoCapture {
    fn inputs(&mut self, _: &[String], _: &[f32], _: usize) -> Result<()> {
        Ok(())
    }

    fn wanted(&self) -> bool {
        false
    }
}

/// Runs one model on one backend over batches of equal-length sequences.
pub struct Runner<'w, 'c> {
    weights: &'w Weights<'c>,
    fw: &'w dyn Forward,
    rope: RopeTable,
    seq_len: usize,
}

impl<'w, 'c> Runner<'w, 'c> {
    /// A runner for sequences of `seq_len` tokens.
    pub fn new(weights: &'w Weights<'c>, fw: &'w dyn Forward, seq_len: usize) -> Result<Self> {
        let cfg = weights.config();
        if let Some(w) = cfg.sliding_window.filter(|&w| w < seq_len) {
            return Err(Error::Invalid(format!(
                "the model attends over a sliding window of {w} tokens, which shears does not \
                 implement; use sequences of at most {w} tokens (--seq-len)"
            )));
        }
        Ok(Runner {
            weights,
            fw,
            rope: RopeTable::new(cfg, seq_len),
            seq_len,
        })
    }

    fn cfg(&self) -> &ModelConfig {
        self.weights.config()
    }

    /// The embeddings of `ids` (whole sequences of `seq_len`).
    pub fn embed(&self, ids: &[u32]) -> Result<Vec<f32>> {
        if !ids.len().is_multiple_of(self.seq_len) {
            return Err(Error::Invalid(format!(
                "{} token ids are not whole sequences of {}",
                ids.len(),
                self.seq_len
            )));
        }
        self.weights.embed(ids)
    }

    /// Runs decoder layer `lw` over the states `x` in place, handing each
    /// linear layer's inputs to `capture` ([`NoCapture`] for none).
    pub fn layer(&self, lw: &LayerWeights, x: &mut [f32], capture: &mut dyn Capture) -> Result<()> {
        let h = self.cfg().hidden;
        let per_chunk = (CHUNK_TOKENS / self.seq_len).max(1) * self.seq_len * h;
        for chunk in x.chunks_mut(per_chunk) {
            self.layer_chunk(lw, chunk, capture)?;
        }
        Ok(())
    }

    fn layer_chunk(
        &self,
        lw: &LayerWeights,
        x: &mut [f32],
        capture: &mut dyn Capture,
    ) -> Result<()> {
        let c = self.cfg();
        let fw = self.fw;
        let rows = x.len() / c.hidden;
        let mut seen = |lins: &[&Linear], input: &[f32]| -> Result<()> {
            if !capture.wanted() {
                return Ok(());
            }
            let names: Vec<String> = lins.iter().map(|l| l.name.clone()).collect();
            capture.inputs(&names, input, rows)
        };
        let lin =
            |l: &Linear, input: &[f32]| fw.linear(input, rows, &l.w, l.out, l.bias.as_deref());

        let hn = fw.rms_norm(x, &lw.input_norm, c.rms_eps)?;
        seen(&[&lw.q, &lw.k, &lw.v], &hn)?;
        let (mut q, mut k, v) = (lin(&lw.q, &hn)?, lin(&lw.k, &hn)?, lin(&lw.v, &hn)?);
        if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
            q = fw.rms_norm(&q, qn, c.rms_eps)?;
            k = fw.rms_norm(&k, kn, c.rms_eps)?;
        }
        let seqs = rows / self.seq_len;
        fw.rope(&mut q, seqs, self.seq_len, c.heads, &self.rope)?;
        fw.rope(&mut k, seqs, self.seq_len, c.kv_heads, &self.rope)?;
        let shape = AttnShape {
            seqs,
            seq_len: self.seq_len,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
        };
        let a = fw.attention(&q, &k, &v, shape)?;
        drop((q, k, v));
        seen(&[&lw.o], &a)?;
        add(x, &lin(&lw.o, &a)?);
        drop(a);

        let hn = fw.rms_norm(x, &lw.post_norm, c.rms_eps)?;
        seen(&[&lw.gate, &lw.up], &hn)?;
        let m = fw.silu_mul(&lin(&lw.gate, &hn)?, &lin(&lw.up, &hn)?)?;
        drop(hn);
        seen(&[&lw.down], &m)?;
        add(x, &lin(&lw.down, &m)?);
        Ok(())
    }

    /// The final RMSNorm of the states.
    pub fn final_norm(&self, x: &[f32]) -> Result<Vec<f32>> {
        let w = self.weights.dense("model.norm.weight")?;
        self.fw.rms_norm(x, &w, self.cfg().rms_eps)
    }

    /// Logits [rows, vocab] of normed states `xn`.
    pub fn logits(&self, head: &Linear, xn: &[f32]) -> Result<Vec<f32>> {
        let rows = xn.len() / self.cfg().hidden;
        self.fw.linear(xn, rows, &head.w, head.out, None)
    }

    /// Next-token NLL of each position but the last of every sequence
    /// ([seqs, seq_len − 1]), from normed states, one sequence's logits at
    /// a time.
    pub fn nll(&self, head: &Linear, xn: &[f32], ids: &[u32]) -> Result<Vec<f32>> {
        let (h, l) = (self.cfg().hidden, self.seq_len);
        let mut out = Vec::with_capacity(ids.len());
        for (xs, ids) in xn.chunks(l * h).zip(ids.chunks(l)) {
            let logits = self.logits(head, &xs[..(l - 1) * h])?;
            out.extend(self.fw.nll(&logits, self.cfg().vocab, &ids[1..])?);
        }
        Ok(out)
    }
}

/// x += y.
fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
