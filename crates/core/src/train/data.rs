//! Classification data sets from CSV: features then an integer class label
//! in the last column, one example a line, optionally gzipped (detected by
//! the magic bytes 1f 8b, whatever the file is called). Features are used
//! as given: no hidden normalisation.
//!
//! A header is skipped only when it is unambiguous: a first line none of
//! whose fields is a number. Blank lines are skipped. Every error names the
//! file, the 1-based line and the reason.

use std::io::Read;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// Largest class label accepted: a label is an index into the model's
/// output layer, so a huge one is a data error, not a huge model.
pub const MAX_CLASSES: usize = 65_536;

/// Examples held in memory: `features` [rows, cols] row-major, `labels`
/// [rows], classes = largest label + 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub features: Vec<f32>,
    pub labels: Vec<u32>,
    pub rows: usize,
    pub cols: usize,
    pub classes: usize,
}

impl Dataset {
    /// Reads a CSV file (plain or gzipped).
    pub fn load(path: &Path) -> Result<Dataset> {
        let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(raw.as_slice())
                .read_to_end(&mut out)
                .map_err(|e| Error::format(path, format!("gzip: {e}")))?;
            out
        } else {
            raw
        };
        let text = String::from_utf8(bytes)
            .map_err(|e| Error::format(path, format!("not UTF-8 text: {e}")))?;
        Dataset::parse(&text).map_err(|reason| Error::format(path, reason))
    }

    /// Parses CSV text; the error is the reason, naming the line.
    pub fn parse(text: &str) -> std::result::Result<Dataset, String> {
        let mut features = Vec::new();
        let mut labels = Vec::new();
        // (line number, fields) of the first data line.
        let mut first: Option<(usize, usize)> = None;
        let mut seen_any = false;
        for (i, line) in text.lines().enumerate() {
            let lineno = i + 1;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if !seen_any {
                seen_any = true;
                if fields.iter().all(|f| f.parse::<f64>().is_err()) {
                    continue; // a header: no field is a number
                }
            }
            let (first_line, width) = *first.get_or_insert((lineno, fields.len()));
            if fields.len() != width {
                return Err(format!(
                    "line {lineno} has {} fields, line {first_line} has {width}",
                    fields.len()
                ));
            }
            if width < 2 {
                return Err(format!(
                    "line {lineno} has {width} field; need features and a label"
                ));
            }
            for (c, f) in fields[..width - 1].iter().enumerate() {
                match f.parse::<f32>() {
                    Ok(v) if v.is_finite() => features.push(v),
                    _ => {
                        return Err(format!(
                            "line {lineno}, column {}: '{}' is not a finite number",
                            c + 1,
                            clip(f)
                        ))
                    }
                }
            }
            let label = fields[width - 1];
            labels.push(parse_label(label).ok_or_else(|| {
                format!(
                    "line {lineno}, column {width}: label '{}' is not a non-negative integer below {MAX_CLASSES}",
                    clip(label)
                )
            })?);
        }
        let Some((_, width)) = first else {
            return Err("no data rows (empty file)".into());
        };
        let classes = *labels.iter().max().expect("at least one row") as usize + 1;
        Ok(Dataset {
            rows: labels.len(),
            cols: width - 1,
            features,
            labels,
            classes,
        })
    }

    /// The examples at `idx`, in that order (same columns and classes).
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(idx.len() * self.cols);
        for &i in idx {
            features.extend_from_slice(&self.features[i * self.cols..(i + 1) * self.cols]);
        }
        Dataset {
            features,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            rows: idx.len(),
            cols: self.cols,
            classes: self.classes,
        }
    }

    /// Examples of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// A label: an integer, written as such ("3") or as an integral float
/// ("3.0"), below [`MAX_CLASSES`].
fn parse_label(s: &str) -> Option<u32> {
    let v = match s.parse::<u64>() {
        Ok(v) => v,
        Err(_) => {
            let f = s.parse::<f64>().ok()?;
            if !(f >= 0.0 && f.fract() == 0.0 && f < MAX_CLASSES as f64) {
                return None;
            }
            f as u64
        }
    };
    (v < MAX_CLASSES as u64).then_some(v as u32)
}

/// A cell as an error message shows it: at most 40 characters.
fn clip(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(40).collect::<String>())
    }
}

/// Row indices of a train / test split, each in increasing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// A stratified split: each class's examples are shuffled (ChaCha8 seeded
/// by `seed`, classes in increasing order) and round(count · fraction) of
/// them go to the test set. The same labels and seed give the same split.
pub fn stratified_split(labels: &[u32], test_fraction: f64, seed: u64) -> Split {
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for mut idx in by_class {
        idx.shuffle(&mut rng);
        let n_test = ((idx.len() as f64 * test_fraction).round() as usize).min(idx.len());
        test.extend_from_slice(&idx[..n_test]);
        train.extend_from_slice(&idx[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    Split { train, test }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_skips_a_header_and_blank_lines() {
        let d = Dataset::parse("a,b,label\n1,2,0\n\n3.5,-4,2\r\n").unwrap();
        assert_eq!((d.rows, d.cols, d.classes), (2, 2, 3));
        assert_eq!(d.features, vec![1.0, 2.0, 3.5, -4.0]);
        assert_eq!(d.labels, vec![0, 2]);
        assert_eq!(d.class_counts(), vec![1, 0, 1]);
    }

    #[test]
    fn errors_name_the_line() {
        let e = Dataset::parse("1,2,0\n1,2,0\n1,0\n").unwrap_err();
        assert_eq!(e, "line 3 has 2 fields, line 1 has 3");
        let e = Dataset::parse("x,y,z\n1,2,0\n1,oops,1\n").unwrap_err();
        assert_eq!(e, "line 3, column 2: 'oops' is not a finite number");
        let e = Dataset::parse("1,2,0\n1,nan,1\n").unwrap_err();
        assert!(e.starts_with("line 2, column 2"), "{e}");
        for bad in ["-1", "1.5", "cat", "1e9"] {
            let e = Dataset::parse(&format!("1,2,0\n1,2,{bad}\n")).unwrap_err();
            assert!(e.starts_with("line 2, column 3: label"), "{bad}: {e}");
        }
        assert_eq!(Dataset::parse("").unwrap_err(), "no data rows (empty file)");
        assert_eq!(
            Dataset::parse("a,b\n\n").unwrap_err(),
            "no data rows (empty file)"
        );
        assert!(Dataset::parse("1\n").unwrap_err().contains("need features"));
    }

    #[test]
    fn a_partly_numeric_first_line_is_data_not_a_header() {
        let e = Dataset::parse("1,x,0\n1,2,0\n").unwrap_err();
        assert!(e.starts_with("line 1, column 2"), "{e}");
    }

    #[test]
    fn gzip_is_detected_by_magic_bytes() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.csv"); // no .gz on purpose
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"1,2,1\n3,4,0\n").unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let d = Dataset::load(&path).unwrap();
        assert_eq!(d.labels, vec![1, 0]);
        std::fs::write(&path, b"1,2,1\n3,4\n").unwrap();
        let e = Dataset::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("data.csv") && e.contains("line 2 has 2 fields"),
            "{e}"
        );
    }

    #[test]
    fn split_is_stratified_and_seeded() {
        let labels: Vec<u32> = (0..400).map(|i| (i % 4) as u32).collect();
        let s = stratified_split(&labels, 0.25, 7);
        assert_eq!((s.train.len(), s.test.len()), (300, 100));
        for c in 0..4 {
            assert_eq!(s.test.iter().filter(|&&i| labels[i] == c).count(), 25);
        }
        let mut all: Vec<usize> = s.train.iter().chain(&s.test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..400).collect::<Vec<_>>());
        assert_eq!(s, stratified_split(&labels, 0.25, 7));
        assert_ne!(s, stratified_split(&labels, 0.25, 8));
    }
}
