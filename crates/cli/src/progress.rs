//! Progress on stderr for long work: an indicatif bar that appears only
//! after a second, only when stderr is a terminal, never with `--quiet`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-counting progress bar that stays hidden for short work.
pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    enabled: bool,
    shown: bool,
}

impl Progress {
    /// A bar over `total` bytes labelled `what`.
    pub fn bytes(total: u64, what: &str, quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        Progress {
            bar,
            start: Instant::now(),
            enabled: !quiet && std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    /// A bar over `total` steps (layers, windows) labelled `what`.
    pub fn steps(total: u64, what: &str, quiet: bool) -> Self {
        let p = Progress::bytes(total, what, quiet);
        p.bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        p
    }

    /// Sets the position and, once a second has passed, shows the bar.
    pub fn set(&mut self, pos: u64) {
        self.bar.set_position(pos);
        if self.enabled && !self.shown && self.start.elapsed() > Duration::from_secs(1) {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
    }

    /// Labels the bar with the tensor being worked on and how many of
    /// `total` tensors came before it.
    pub fn tensor(&self, index: usize, total: usize, name: &str) {
        self.bar
            .set_message(format!("[{}/{total}] {name}", index + 1));
    }

    /// Removes the bar from the terminal.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
