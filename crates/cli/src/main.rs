//! The `shears` binary: parses arguments, sets up logging, runs one command
//! and maps the outcome to an exit code: 0 done, 1 a check failed, 2 bad
//! input or usage, 3 the compute backend failed.

mod args;
mod backend;
mod commands;
mod engine;
mod lm;
mod output;
mod pipeline;
mod progress;
mod select;
mod training;

use clap::Parser;

/// mimalloc keeps and reuses freed pages: every tensor-sized buffer
/// (codes, keys, masks, output bytes) would otherwise be a fresh mapping
/// from the system allocator, faulted in page by page, tensor after tensor.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v2 and v3 alike; the
/// Rust bindings name the options around it, 14 and 16, but not this one).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory committed for reuse: by default mimalloc hands it
/// back a second after a free, so each tensor's mask and output buffers
/// were faulted in (and zeroed by the kernel) afresh, 5–10% of a compress
/// run. Peak memory is unchanged: freed buffers are reused, not added to.
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: an option setter of the allocator, called first in main.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

use args::{Cli, Command};

/// Exit code for a check that found a difference (`--verify`).
pub const EXIT_CHECK_FAILED: i32 = 1;

/// A check that ran and failed (exit code 1, not 2).
#[derive(Debug)]
pub struct CheckFailed(pub String);

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckFailed {}
/// Exit code for bad input or usage.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code for a failure of the GPU or another backend.
pub const EXIT_BACKEND: i32 = 3;

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // Our crates at the chosen level; wgpu and friends only when they warn.
    let default = format!(
        "warn,shears={level},shears_core={level},shears_kernels={level},shears_cli={level}"
    );
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHEARS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(verbose > 0)
        .init();
}

fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.downcast_ref::<CheckFailed>().is_some() {
            return EXIT_CHECK_FAILED;
        }
        if let Some(e) = cause.downcast_ref::<shears_kernels::Error>() {
            return match e {
                shears_kernels::Error::NoAdapter(_) | shears_kernels::Error::Unsupported(_) => {
                    EXIT_BAD_INPUT
                }
                shears_kernels::Error::Core(_) => EXIT_BAD_INPUT,
                _ => EXIT_BACKEND,
            };
        }
        if let Some(shears_core::Error::Backend { .. }) = cause.downcast_ref::<shears_core::Error>()
        {
            return EXIT_BACKEND;
        }
    }
    EXIT_BAD_INPUT
}

/// On SIGINT, SIGTERM or SIGHUP: remove this run's partial outputs, then
/// exit with 128 + the signal's number, as a shell reports it. Without
/// this, an interrupted run would leave its hidden temporary folder
/// behind (a later run removes such leftovers too, but only if there is
/// one).
fn clean_up_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    shears_core::checkpoint::partials::remove_all();
                    std::process::exit(128 + sig);
                }
            });
        }
        Err(e) => tracing::warn!(
            "cannot watch for signals ({e}); an interrupted run may leave a temporary folder"
        ),
    }
}

/// Parses the command line; a usage error is printed as one line (clap's
/// message, its hints joined) and exits 2 like every bad input. Help and
/// version go to stdout as clap prints them.
fn parse_args() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("{}", one_line(&e.to_string()));
            std::process::exit(EXIT_BAD_INPUT);
        }
    }
}

/// clap's multi-line usage error as one line: its message and hints
/// (possible values, similar flags) joined, the "--help" footer dropped.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn main() {
    keep_freed_memory();
    let cli = parse_args();
    init_logging(cli.global.verbose, cli.global.quiet);
    clean_up_on_signals();
    let mut out = output::Out::new(cli.global.quiet);
    let quiet = cli.global.quiet;
    let result = match &cli.command {
        Command::Devices(a) => commands::devices::run(a, &mut out),
        Command::Bench(a) => commands::bench::run(a, cli.global.backend, &mut out),
        Command::Inspect(a) => commands::inspect::run(a, cli.global.backend, quiet, &mut out),
        Command::Generate(a) => commands::generate::run(a, quiet, &mut out),
        Command::Prune(a) => commands::prune::run(a, &cli.global, &mut out),
        Command::Calibration(a) => commands::calibration::run(a, &mut out),
        Command::Eval(a) => commands::eval::run(a, cli.global.backend, quiet, &mut out),
        Command::Calibrate(a) => commands::calibrate::run(a, cli.global.backend, quiet, &mut out),
        Command::Compress(a) => commands::compress::run(a, &cli.global, &mut out),
        Command::Decompress(a) => commands::decompress::run(a, &cli.global, &mut out),
        Command::Quantize(a) => commands::quantize::run(a, &cli.global, &mut out),
        Command::Train(a) => commands::train::run(a, cli.global.backend, quiet, &mut out),
        Command::Evaluate(a) => commands::evaluate::run(a, cli.global.backend, &mut out),
        Command::Distill(a) => match &a.command {
            args::DistillCommand::Model(m) => {
                commands::distill::model(m, cli.global.backend, quiet, &mut out)
            }
            args::DistillCommand::Layers(l) => commands::distill::layers(l, &cli.global, &mut out),
        },
    };
    out.flush();
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(exit_code(&err));
    }
}
