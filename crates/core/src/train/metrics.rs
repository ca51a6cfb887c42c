//! How well a classifier does on labelled examples: accuracy and the
//! confusion matrix.

/// Accuracy and confusion matrix of a classifier on labelled examples.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metrics {
    pub rows: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// confusion[actual][predicted].
    pub confusion: Vec<Vec<u64>>,
}

/// The predicted class of each row of `logits` [rows, classes]: the
/// largest logit, the lowest index on ties.
pub fn predict(logits: &[f32], classes: usize) -> Vec<u32> {
    logits
        .chunks_exact(classes)
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

/// Scores `logits` [rows, classes] against `labels`.
pub fn evaluate(logits: &[f32], labels: &[u32], classes: usize) -> Metrics {
    let mut confusion = vec![vec![0u64; classes]; classes];
    let mut correct = 0;
    for (p, &l) in predict(logits, classes).into_iter().zip(labels) {
        confusion[l as usize][p as usize] += 1;
        correct += (p == l) as usize;
    }
    let rows = labels.len();
    Metrics {
        rows,
        correct,
        accuracy: if rows == 0 {
            f64::NAN
        } else {
            correct as f64 / rows as f64
        },
        confusion,
    }
}
