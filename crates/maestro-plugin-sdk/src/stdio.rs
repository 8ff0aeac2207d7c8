//! The protocol's private stdin and stdout, and the threads that frame them into lines.

use maestro_plugin_protocol::framing::take_line_piece;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::thread::JoinHandle;

use maestro_plugin_protocol::MAX_LINE_BYTES;
use rustix::fs::{Mode, OFlags};
use tokio::sync::mpsc;

/// One line read from the host.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A line, newline removed.
    Line(String),
    /// A line longer than [`MAX_LINE_BYTES`] or not UTF-8; its content was dropped.
    Unreadable(&'static str),
}

/// Move the protocol off fds 0 and 1: returns close-on-exec copies of the real stdin and stdout,
/// then points fd 1 at stderr and fd 0 at `/dev/null`, so neither the plugin's stray prints nor
/// any child that inherits them can touch the protocol stream.
pub(crate) fn take_over() -> io::Result<(File, File)> {
    let input = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdin(), 3)?;
    let output = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdout(), 3)?;
    rustix::stdio::dup2_stdout(rustix::stdio::stderr())?;
    let null = rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok((File::from(input), File::from(output)))
}

/// Read `input` line by line on a thread of its own until end of input or until `lines` closes.
pub(crate) fn spawn_reader(input: File, lines: mpsc::Sender<Incoming>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(64 * 1024, input);
        let mut line = Vec::new();
        while let Ok(Some(too_long)) = read_bounded_line(&mut reader, &mut line, MAX_LINE_BYTES) {
            let incoming = if too_long {
                Incoming::Unreadable("line longer than the protocol's limit")
            } else {
                match String::from_utf8(std::mem::take(&mut line)) {
                    Ok(text) => Incoming::Line(text),
                    Err(_) => Incoming::Unreadable("line is not UTF-8"),
                }
            };
            if lines.blocking_send(incoming).is_err() {
                break;
            }
        }
    });
}

/// Read one line into `line` (newline removed), keeping at most `max` bytes. `Ok(None)` at end
/// of input; `Ok(Some(true))` when the line was longer than `max` (its content is then cut).
pub(crate) fn read_bounded_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    line.clear();
    let mut too_long = false;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(read_any.then_some(too_long));
        }
        read_any = true;
        let piece = take_line_piece(available, line, max);
        too_long |= piece.truncated;
        reader.consume(piece.consumed);
        if piece.complete {
            return Ok(Some(too_long));
        }
    }
}

/// Write every line sent on `lines` to `output`, flushing whenever the queue runs dry.
pub(crate) fn spawn_writer(output: File, mut lines: mpsc::Receiver<String>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut writer = BufWriter::with_capacity(64 * 1024, output);
        while let Some(line) = lines.blocking_recv() {
            if writer.write_all(line.as_bytes()).is_err() {
                return;
            }
            while let Ok(line) = lines.try_recv() {
                if writer.write_all(line.as_bytes()).is_err() {
                    return;
                }
            }
            if writer.flush().is_err() {
                return;
            }
        }
        let _ = writer.flush();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_the_last_one_may_lack_a_newline() {
        let data = b"short\nthis one is too long\nlast".to_vec();
        let mut reader = BufReader::with_capacity(4, &data[..]);
        let mut line = Vec::new();
        assert_eq!(
            read_bounded_line(&mut reader, &mut line, 10).unwrap(),
            Some(false)
        );
        assert_eq!(line, b"short");
        assert_eq!(
            read_bounded_line(&mut reader, &mut line, 10).unwrap(),
            Some(true)
        );
        assert_eq!(line.len(), 10);
        assert_eq!(
            read_bounded_line(&mut reader, &mut line, 10).unwrap(),
            Some(false)
        );
        assert_eq!(line, b"last");
        assert_eq!(read_bounded_line(&mut reader, &mut line, 10).unwrap(), None);
    }
}
