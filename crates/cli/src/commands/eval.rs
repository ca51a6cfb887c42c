//! `shears eval MODEL --text FILE…`: perplexity and next-token accuracy of
//! a language model (dense or compressed-tensors) on text and, with
//! `--ref DENSE`, its agreement with a reference over the same predictions.

use anyhow::{bail, Result};
use serde_json::json;
use shears_core::model::eval::{score, Scores, Windows};
use shears_core::model::text::read_tokens;
use shears_core::model::NoCapture;

use crate::args::{BackendChoice, EvalArgs};
use crate::backend::Backend;
use crate::lm::{run_layers, Model};
use crate::output::{thousands, Out};

pub fn run(a: &EvalArgs, backend: BackendChoice, quiet: bool, out: &mut Out) -> Result<()> {
    let backend = Backend::open(backend)?;
    let fw = backend.forward();
    let model = Model::open(&a.model)?;
    let weights = model.weights()?;
    let reference = a.reference.as_deref().map(Model::open).transpose()?;
    let ref_weights = reference.as_ref().map(Model::weights).transpose()?;
    if let Some(r) = &reference {
        if r.cfg.vocab != model.cfg.vocab {
            bail!(
                "{}: its vocabulary has {} ids, {}'s has {}; --ref needs the same tokenizer",
                a.reference.as_ref().expect("given").display(),
                r.cfg.vocab,
                a.model.display(),
                model.cfg.vocab
            );
        }
    }
    let tok = model.tokenizer()?;
    let seq_len = a.text.seq_len;
    let per = seq_len.saturating_sub(tok.bos.is_some() as usize);
    let stride = a.stride.unwrap_or(per);
    let text = read_tokens(&tok, &a.text.text, a.text.tokens + per)?;
    let windows = Windows::new(&text, tok.bos, seq_len, stride, a.text.tokens)?;
    tracing::info!(
        "{} windows of {seq_len} tokens (stride {stride}) from {} text tokens",
        windows.len(),
        text.len()
    );
    let start = std::time::Instant::now();
    let xn = run_layers(
        &weights,
        fw.as_ref(),
        &windows.ids,
        seq_len,
        &mut NoCapture,
        "eval",
        quiet,
    )?;
    let ref_states = match &ref_weights {
        Some(w) => Some((
            w.lm_head()?,
            run_layers(
                w,
                fw.as_ref(),
                &windows.ids,
                seq_len,
                &mut NoCapture,
                "eval --ref",
                quiet,
            )?,
        )),
        None => None,
    };
    let head = weights.lm_head()?;
    let scores = score(
        fw.as_ref(),
        &head,
        &xn,
        &windows,
        ref_states.as_ref().map(|(h, x)| (h, x.as_slice())),
    )?;
    let seconds = start.elapsed().as_secs_f64();
    // What the passes computed: every layer over every window, and the
    // output projection over the scored predictions.
    let passes = 1 + ref_states.is_some() as usize;
    let flops = passes as f64
        * (model.cfg.layers as f64 * model.cfg.layer_flops(windows.ids.len(), seq_len)
            + 2.0 * (model.cfg.vocab * model.cfg.hidden * scores.tokens) as f64);
    let speed = Speed {
        seconds,
        tokens_per_s: (passes * windows.ids.len()) as f64 / seconds,
        gflops: flops / seconds / 1e9,
        backend: backend.describe(),
    };
    if a.json {
        out.answer(&serde_json::to_string_pretty(&report(
            a, &windows, &scores, &speed,
        ))?);
    } else {
        print_table(a, &windows, &scores, &speed, out);
    }
    Ok(())
}

/// How fast the passes ran.
struct Speed {
    seconds: f64,
    tokens_per_s: f64,
    /// Achieved GFLOP/s (see `ModelConfig::layer_flops`).
    gflops: f64,
    backend: String,
}

fn report(a: &EvalArgs, w: &Windows, s: &Scores, sp: &Speed) -> serde_json::Value {
    let mut v = json!({
        "model": a.model,
        "text": a.text.text,
        "seq_len": w.seq_len,
        "windows": w.len(),
        "tokens": s.tokens,
        "mean_nll": s.mean_nll,
        "perplexity": s.perplexity,
        "accuracy": s.accuracy,
        "seconds": sp.seconds,
        "tokens_per_s": sp.tokens_per_s,
        "gflops": sp.gflops,
        "backend": sp.backend,
    });
    if let Some(r) = &s.reference {
        v["reference"] = json!({
            "model": a.reference,
            "perplexity": r.perplexity,
            "accuracy": r.accuracy,
            "top1_agreement": r.top1_agreement,
            "kl_mean": r.kl_mean,
            "kl_p99": r.kl_p99,
        });
    }
    v
}

fn print_table(a: &EvalArgs, w: &Windows, s: &Scores, sp: &Speed, out: &mut Out) {
    out.line(&format!(
        "{}: {} predictions in {} windows of {} tokens",
        a.model.display(),
        thousands(s.tokens as u64),
        w.len(),
        w.seq_len
    ));
    out.line(&format!(
        "  {:.1} s on {}: {:.0} tokens/s, {:.1} GFLOP/s",
        sp.seconds, sp.backend, sp.tokens_per_s, sp.gflops
    ));
    out.line(&format!("  perplexity        {:>10.4}", s.perplexity));
    out.line(&format!("  mean NLL (nats)   {:>10.5}", s.mean_nll));
    out.line(&format!("  next-token acc.   {:>9.2}%", 100.0 * s.accuracy));
    if let Some(r) = &s.reference {
        let name = a.reference.as_ref().expect("given").display();
        out.line(&format!("  reference ({name}):"));
        out.line(&format!("    perplexity      {:>10.4}", r.perplexity));
        out.line(&format!("    next-token acc. {:>9.2}%", 100.0 * r.accuracy));
        out.line(&format!(
            "    top-1 agreement {:>9.2}%",
            100.0 * r.top1_agreement
        ));
        out.line(&format!(
            "    KL(ref‖model)   {:>10.5} nats/token mean, {:.5} p99",
            r.kl_mean, r.kl_p99
        ));
    }
}
