//! Writing on a thread of its own, so the next tensor's compute overlaps the
//! last one's write: the command loop hands each output piece to a
//! [`Sink`], a channel of at most `window` pieces in flight (the memory
//! bound), and a scoped writer thread drains it into the
//! [`CheckpointWriter`]. Tensors copied unchanged go file-to-file in the
//! kernel ([`CheckpointWriter::write_view`]).

use std::sync::mpsc::{sync_channel, SyncSender};

use anyhow::{anyhow, Result};
use shears_core::checkpoint::CheckpointWriter;
use shears_core::TensorView;

/// Pieces in flight between compute and the writer.
pub const WINDOW: usize = 2;

/// One whole output tensor, by name, in checkpoint order: the writer
/// checks the name and size against the header it planned.
pub enum Piece<'a> {
    /// A tensor copied unchanged from the mapped input.
    View(String, TensorView<'a>),
    /// Bytes computed for the output.
    Bytes(String, Vec<u8>),
}

/// Where the command loop sends its pieces.
pub struct Sink<'a> {
    tx: SyncSender<Piece<'a>>,
}

impl<'a> Sink<'a> {
    /// Queues a piece; blocks while `WINDOW` pieces wait.
    pub fn send(&self, piece: Piece<'a>) -> Result<()> {
        self.tx
            .send(piece)
            .map_err(|_| anyhow!("the output writer stopped"))
    }
}

/// Runs `body` with a [`Sink`] whose pieces a writer thread writes, and
/// gives the writer back (for config files and `finish`). A writer error
/// wins over the body's (which is then only "the writer stopped").
pub fn streamed<'a, T>(
    writer: CheckpointWriter,
    body: impl FnOnce(&Sink<'a>) -> Result<T>,
) -> Result<(T, CheckpointWriter)> {
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Piece<'a>>(WINDOW);
        let handle = s.spawn(move || -> Result<CheckpointWriter> {
            let mut writer = writer;
            for piece in rx {
                match piece {
                    Piece::View(name, v) => writer.write_view(&name, &v)?,
                    Piece::Bytes(name, b) => writer.write_tensor(&name, &b)?,
                }
            }
            Ok(writer)
        });
        let sink = Sink { tx };
        let out = body(&sink);
        drop(sink);
        let writer = handle
            .join()
            .map_err(|_| anyhow!("the output writer panicked"))??;
        Ok((out?, writer))
    })
}
