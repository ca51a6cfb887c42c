//! The pruning stage of the engine: per-tensor scoring inputs loaded up
//! front, the one cut of `--scope global` (a read-only pre-pass), and the
//! keep-mask of one tensor on the backend's select and mask families.

use anyhow::Result;
use shears_core::calibration::Calibration;
use shears_core::reference::importance::Importance;
use shears_core::reference::mask::{expand_cols, expand_rows, structured_keep, Mask};
use shears_core::reference::score::{random_salt, Method, Scorer};
use shears_core::reference::select::{global_cut, prune_count, tensor_cut, Cut, Scored, Select};
use shears_core::{Checkpoint, TensorInfo, TensorView};

use super::config::{Mode, PruneConfig, Scope};

/// Per-tensor inputs the scorer and validation need, loaded up front (so
/// a missing calibration key is found before any work).
pub struct Aux<'c> {
    norms: Option<Vec<f32>>,
    grad: Option<TensorView<'c>>,
    /// `<weight>.inputs` rows for --validate, when the file has them.
    pub inputs: Option<(Vec<f32>, usize)>,
    salt: u32,
}

impl Aux<'_> {
    /// The scorer of this tensor under `method`.
    pub fn scorer(&self, method: Method) -> Scorer<'_> {
        Scorer {
            method,
            norms: self.norms.as_deref(),
            grad: self.grad,
            salt: self.salt,
        }
    }
}

/// The scoring inputs of every tensor in `chosen`, from the calibration
/// file where the method needs them; `inputs` too when `validate`.
pub fn load_aux<'c>(
    ckpt: &Checkpoint,
    chosen: &[usize],
    p: &PruneConfig,
    calib: Option<&'c Calibration>,
    validate: bool,
    seed: u64,
) -> Result<Vec<Aux<'c>>> {
    chosen
        .iter()
        .map(|&i| {
            let t = &ckpt.tensors[i];
            let cols = t.shape[1];
            let missing = |key: &str, calib: &Calibration| {
                anyhow::anyhow!(
                    "{}: tensor '{}.{key}' is missing (needed by --method {} for '{}')",
                    calib.path().display(),
                    t.name,
                    p.method.name(),
                    t.name
                )
            };
            let mut aux = Aux {
                norms: None,
                grad: None,
                inputs: None,
                salt: random_salt(seed, &t.name),
            };
            if let Some(c) = calib {
                if p.method == Method::Wanda {
                    aux.norms = Some(
                        c.input_norms(&t.name, cols)?
                            .ok_or_else(|| missing("input_norm", c))?,
                    );
                }
                if p.method == Method::Taylor {
                    aux.grad = Some(
                        c.grad(&t.name, &t.shape)?
                            .ok_or_else(|| missing("grad", c))?,
                    );
                }
                if validate {
                    aux.inputs = c.inputs(&t.name, cols)?;
                }
            }
            Ok(aux)
        })
        .collect()
}

/// The one cut of `--scope global` over every chosen tensor (a first,
/// read-only pass), or `None` for the other modes.
pub fn global_scope_cut(
    ckpt: &Checkpoint,
    chosen: &[usize],
    aux: &[Aux],
    p: &PruneConfig,
    select: &dyn Select,
) -> Result<Option<Cut>> {
    let Mode::Unstructured {
        sparsity,
        scope: Scope::Global,
    } = p.mode
    else {
        return Ok(None);
    };
    let items: Vec<Scored> = chosen
        .iter()
        .zip(aux)
        .map(|(&i, x)| (ckpt.view(&ckpt.tensors[i]), x.scorer(p.method)))
        .collect();
    let n: u64 = items.iter().map(|(w, _)| w.numel() as u64).sum();
    let k = prune_count(sparsity, n);
    let cut = global_cut(select, &items, k)?;
    tracing::info!(
        "global cut: {k} of {n} weights, key {:#010x} with {} ties",
        cut.key,
        cut.ties
    );
    Ok(Some(cut))
}

/// The families a mask is made with (the backend's, or the verifier's).
pub struct MaskFamilies<'a> {
    pub importance: &'a dyn Importance,
    pub select: &'a dyn Select,
    pub mask: &'a dyn Mask,
}

/// The keep-mask of one tensor (1 kept, 0 pruned) and the global ties it
/// used.
pub fn make_mask(
    f: &MaskFamilies,
    w: &TensorView,
    scorer: &Scorer,
    mode: Mode,
    global: Option<Cut>,
) -> shears_core::Result<(Vec<u8>, u64)> {
    let (rows, cols) = w.matrix_dims();
    match mode {
        Mode::Unstructured {
            scope: Scope::Global,
            ..
        } => f
            .mask
            .apply_cut(w, scorer, global.expect("global cut computed")),
        Mode::Unstructured {
            sparsity,
            scope: Scope::Tensor,
        } => {
            let k = prune_count(sparsity, w.numel() as u64);
            let cut = tensor_cut(f.select, w, scorer, k)?;
            f.mask.apply_cut(w, scorer, cut)
        }
        Mode::Unstructured {
            sparsity,
            scope: Scope::Row,
        } => {
            let k = prune_count(sparsity, cols as u64);
            let cuts = f.select.row_cuts(w, scorer, k)?;
            Ok((f.mask.apply_row_cuts(w, scorer, &cuts)?, 0))
        }
        Mode::Pattern { n, m } => Ok((f.mask.nm(w, scorer, n, m)?, 0)),
        Mode::Rows { sparsity } => {
            let norms = f.importance.row_sumsq(w)?;
            let keep = structured_keep(&norms, prune_count(sparsity, rows as u64));
            Ok((expand_rows(&keep, cols), 0))
        }
        Mode::Cols { sparsity } => {
            let norms = f.importance.col_sumsq(w)?;
            let keep = structured_keep(&norms, prune_count(sparsity, cols as u64));
            Ok((expand_cols(&keep, rows), 0))
        }
    }
}

/// About how many weights `mode` prunes in `t` (for plans).
pub fn prune_count_for(t: &TensorInfo, mode: Mode) -> u64 {
    let (rows, cols) = (t.shape[0] as u64, t.shape[1] as u64);
    match mode {
        Mode::Unstructured {
            sparsity,
            scope: Scope::Row,
        } => rows * prune_count(sparsity, cols),
        Mode::Unstructured { sparsity, .. } => prune_count(sparsity, rows * cols),
        Mode::Pattern { n, m } => rows * cols / m as u64 * (m - n) as u64,
        Mode::Rows { sparsity } => prune_count(sparsity, rows) * cols,
        Mode::Cols { sparsity } => prune_count(sparsity, cols) * rows,
    }
}
