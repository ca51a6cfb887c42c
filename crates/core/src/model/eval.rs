//! What a model's predictions are worth on a text: perplexity and
//! next-token accuracy and, against a reference model over the same
//! positions, top-1 agreement and KL(ref ‖ model). The text is cut into
//! windows of `seq_len` tokens advanced by `stride`; a window scores only
//! the predictions of tokens no earlier window scored (all of them in the
//! first), so every text token after the first is predicted exactly once.

use rayon::prelude::*;

use super::runner::{Capture, Runner};
use super::weights::{Linear, Weights};
use crate::reference::forward::Forward;
use crate::{Error, Result};

/// Token windows and which of their predictions count.
#[derive(Debug, Clone, PartialEq)]
pub struct Windows {
    /// `seqs × seq_len` ids, BOS first in each when the model wants one.
    pub ids: Vec<u32>,
    pub seq_len: usize,
    /// Per window: the first token index (within the window) whose
    /// prediction is scored.
    pub scored_from: Vec<usize>,
}

impl Windows {
    /// Windows over the text ids `text`: `seq_len` tokens each (BOS and
    /// `seq_len − 1` text tokens when `bos`), starts `stride` text tokens
    /// apart, as many as score at most `max_tokens` predictions (at least
    /// one window).
    pub fn new(
        text: &[u32],
        bos: Option<u32>,
        seq_len: usize,
        stride: usize,
        max_tokens: usize,
    ) -> Result<Self> {
        let per = seq_len.saturating_sub(bos.is_some() as usize);
        if seq_len < 2 || per < 2 {
            return Err(Error::Invalid(format!(
                "--seq-len {seq_len} leaves fewer than 2 text tokens per window"
            )));
        }
        if stride == 0 || stride > per {
            return Err(Error::Invalid(format!(
                "--stride {stride} must be between 1 and the {per} text tokens of a window"
            )));
        }
        if text.len() < per {
            return Err(Error::Invalid(format!(
                "the text holds {} tokens, less than one window of {per}",
                text.len()
            )));
        }
        let mut w = Windows {
            ids: Vec::new(),
            seq_len,
            scored_from: Vec::new(),
        };
        let mut scored = 0usize;
        let mut start = 0usize;
        while start + per <= text.len() {
            w.ids.extend(bos);
            w.ids.extend_from_slice(&text[start..start + per]);
            // The first window scores every prediction; later ones only
            // their last `stride` tokens (the ones not seen before).
            let from = match start {
                0 => 1,
                _ => seq_len - stride,
            };
            if start > 0 && scored + (seq_len - from) > max_tokens {
                break;
            }
            w.scored_from.push(from);
            scored += seq_len - from;
            start += stride;
        }
        Ok(w)
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.scored_from.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.scored_from.is_empty()
    }
}

/// Runs the model over `ids` and returns the final normed states, calling
/// `on_layer(i)` as each decoder layer finishes.
pub fn final_states(
    weights: &Weights,
    fw: &dyn Forward,
    ids: &[u32],
    seq_len: usize,
    capture: &mut dyn Capture,
    on_layer: &mut dyn FnMut(usize),
) -> Result<Vec<f32>> {
    let runner = Runner::new(weights, fw, seq_len)?;
    let mut x = runner.embed(ids)?;
    for i in 0..weights.config().layers {
        let lw = weights.layer(i)?;
        runner.layer(&lw, &mut x, capture)?;
        drop(lw);
        capture.layer_done(i)?;
        on_layer(i);
    }
    runner.final_norm(&x)
}

/// The figures of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Scored predictions.
    pub tokens: usize,
    pub mean_nll: f64,
    pub perplexity: f64,
    /// Fraction of predictions whose most likely token is the text's.
    pub accuracy: f64,
    pub reference: Option<Agreement>,
}

/// The model against a reference over the same predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreement {
    pub perplexity: f64,
    pub accuracy: f64,
    /// Fraction of predictions where both pick the same most likely token.
    pub top1_agreement: f64,
    /// KL(ref ‖ model) in nats per token: mean and 99th percentile.
    pub kl_mean: f64,
    pub kl_p99: f64,
}

/// One prediction: its NLL, whether its argmax is the target, and, with a
/// reference, the reference's NLL, argmax hit, same argmax, KL.
#[derive(Debug, Clone, Copy, Default)]
struct Point {
    nll: f64,
    hit: bool,
    ref_nll: f64,
    ref_hit: bool,
    same: bool,
    kl: f64,
}

/// log-sum-exp of a row and its argmax.
fn lse_argmax(row: &[f32]) -> (f64, usize) {
    let (mut best, mut max) = (0usize, f32::NEG_INFINITY);
    for (i, &x) in row.iter().enumerate() {
        if x > max {
            (best, max) = (i, x);
        }
    }
    let sum: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
    (max as f64 + sum.ln(), best)
}

/// Scores the final normed states `xn` of a model (and of a reference,
/// with its output projection) on the windows' scored predictions.
pub fn score(
    fw: &dyn Forward,
    head: &Linear,
    xn: &[f32],
    windows: &Windows,
    reference: Option<(&Linear, &[f32])>,
) -> Result<Scores> {
    let (l, h) = (windows.seq_len, head.inn);
    let mut points = Vec::new();
    for (s, &from) in windows.scored_from.iter().enumerate() {
        let rows = l - from; // predictions of tokens from..l
        let states = |x: &[f32]| x[(s * l + from - 1) * h..(s * l + l - 1) * h].to_vec();
        let logits = fw.linear(&states(xn), rows, &head.w, head.out, None)?;
        let ref_logits = reference
            .map(|(rh, rx)| fw.linear(&states(rx), rows, &rh.w, rh.out, None))
            .transpose()?;
        let targets = &windows.ids[s * l + from..s * l + l];
        let v = head.out;
        let batch: Vec<Point> = (0..rows)
            .into_par_iter()
            .map(|r| {
                let row = &logits[r * v..(r + 1) * v];
                let t = targets[r] as usize;
                let (lse, arg) = lse_argmax(row);
                let mut p = Point {
                    nll: lse - row[t] as f64,
                    hit: arg == t,
                    ..Point::default()
                };
                if let Some(rl) = &ref_logits {
                    let rrow = &rl[r * v..(r + 1) * v];
                    let (rlse, rarg) = lse_argmax(rrow);
                    p.ref_nll = rlse - rrow[t] as f64;
                    p.ref_hit = rarg == t;
                    p.same = rarg == arg;
                    p.kl = rrow
                        .iter()
                        .zip(row)
                        .map(|(&a, &b)| {
                            let lp_ref = a as f64 - rlse;
                            lp_ref.exp() * (lp_ref - (b as f64 - lse))
                        })
                        .sum::<f64>()
                        .max(0.0);
                }
                p
            })
            .collect();
        points.extend(batch);
    }
    Ok(summarize(&points, reference.is_some()))
}

fn summarize(points: &[Point], with_ref: bool) -> Scores {
    let n = points.len().max(1) as f64;
    let mean = |f: &dyn Fn(&Point) -> f64| points.iter().map(f).sum::<f64>() / n;
    let mean_nll = mean(&|p| p.nll);
    let reference = with_ref.then(|| {
        let mut kl: Vec<f64> = points.iter().map(|p| p.kl).collect();
        kl.sort_by(f64::total_cmp);
        let p99 = kl
            .get(((kl.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0);
        Agreement {
            perplexity: mean(&|p| p.ref_nll).exp(),
            accuracy: mean(&|p| p.ref_hit as u8 as f64),
            top1_agreement: mean(&|p| p.same as u8 as f64),
            kl_mean: mean(&|p| p.kl),
            kl_p99: p99,
        }
    });
    Scores {
        tokens: points.len(),
        mean_nll,
        perplexity: mean_nll.exp(),
        accuracy: mean(&|p| p.hit as u8 as f64),
        reference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_score_each_token_once() {
        let text: Vec<u32> = (0..20).collect();
        // No BOS, windows of 8 every 4: starts 0, 4, 8, 12.
        let w = Windows::new(&text, None, 8, 4, 1000).unwrap();
        assert_eq!(w.scored_from, vec![1, 4, 4, 4]);
        let scored: usize = w.scored_from.iter().map(|f| 8 - f).sum();
        assert_eq!(scored, 19); // tokens 1..=19
        assert_eq!(&w.ids[8..16], &[4, 5, 6, 7, 8, 9, 10, 11]);
        // With BOS: 7 text tokens a window.
        let w = Windows::new(&text, Some(99), 8, 7, 1000).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(&w.ids[..2], &[99, 0]);
        // --tokens caps the windows.
        assert_eq!(Windows::new(&text, None, 8, 8, 5).unwrap().len(), 1);
        assert!(Windows::new(&text, None, 8, 9, 100).is_err());
        assert!(Windows::new(&text[..5], None, 8, 8, 100).is_err());
    }
}
