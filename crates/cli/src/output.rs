//! Everything printed on stdout goes through [`Out`], which stops quietly
//! when the reader closes the pipe (`shears inspect … | head`). Under `-q`
//! reports (tables, "wrote …") are not printed; what a command exists to
//! print (`inspect`, `devices`, `evaluate`) and JSON the user asked for
//! with `--json` are ([`Out::answer`]).

use std::io::Write;

/// Buffered stdout that treats a closed pipe as the end of output.
pub struct Out {
    out: std::io::BufWriter<std::io::Stdout>,
    closed: bool,
    /// `-q`: reports are dropped, answers printed.
    quiet: bool,
}

impl Out {
    /// Stdout; `quiet` (`-q`) drops report lines.
    pub fn new(quiet: bool) -> Self {
        Out {
            out: std::io::BufWriter::new(std::io::stdout()),
            closed: false,
            quiet,
        }
    }

    /// Prints one line of a report (a newline is added); nothing under `-q`.
    pub fn line(&mut self, s: &str) {
        if !self.quiet {
            self.answer(s);
        }
    }

    /// Prints one line the user asked for, even under `-q`: the output of
    /// a command that exists to print, or `--json`.
    pub fn answer(&mut self, s: &str) {
        if self.closed {
            return;
        }
        if let Err(e) = writeln!(self.out, "{s}") {
            self.fail(e);
        }
    }

    /// Flushes; a closed pipe is not an error.
    pub fn flush(&mut self) {
        if !self.closed {
            if let Err(e) = self.out.flush() {
                self.fail(e);
            }
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            tracing::warn!("writing to stdout: {e}");
        }
        self.closed = true;
    }
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "3MB", "2GiB", "500k", "0" → bytes (decimal for kB/MB/GB, binary for
/// KiB/MiB/GiB; a bare number is bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (try 3MB or 2GiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        other => return Err(format!("unknown size unit '{other}' in '{s}'")),
    };
    Ok((v * mult).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("3MB").unwrap(), 3_000_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert!(parse_size("lots").is_err());
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
