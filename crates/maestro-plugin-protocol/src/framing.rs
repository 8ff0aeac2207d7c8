//! Cutting a byte stream into protocol lines of bounded length, without doing any I/O.
//!
//! Both ends read their peer's stream into a buffer and hand each buffered piece to
//! [`take_line_piece`], so the host and the SDK frame lines identically: a line longer than
//! the limit is kept up to the limit and reported as too long, never buffered whole.

/// What [`take_line_piece`] did with a buffered piece of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinePiece {
    /// How many bytes of the piece were used (the caller consumes them from its buffer).
    pub consumed: usize,
    /// Whether the line ended in this piece (its newline was consumed, not kept).
    pub complete: bool,
    /// Whether bytes beyond `max` were dropped from the line.
    pub truncated: bool,
}

/// Append to `line` the part of `available` up to and without the next newline, keeping
/// `line` at most `max` bytes long.
pub fn take_line_piece(available: &[u8], line: &mut Vec<u8>, max: usize) -> LinePiece {
    let (piece, consumed, complete) = match available.iter().position(|&b| b == b'\n') {
        Some(end) => (&available[..end], end + 1, true),
        None => (available, available.len(), false),
    };
    let room = max.saturating_sub(line.len());
    line.extend_from_slice(&piece[..piece.len().min(room)]);
    LinePiece {
        consumed,
        complete,
        truncated: piece.len() > room,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_at_newlines_and_bounded() {
        let mut line = Vec::new();
        let piece = take_line_piece(b"abc\ndef", &mut line, 10);
        assert_eq!(
            (
                line.as_slice(),
                piece.consumed,
                piece.complete,
                piece.truncated
            ),
            (&b"abc"[..], 4, true, false)
        );
        line.clear();
        let piece = take_line_piece(b"0123456789abc", &mut line, 10);
        assert_eq!(
            (line.len(), piece.consumed, piece.complete, piece.truncated),
            (10, 13, false, true)
        );
        let piece = take_line_piece(b"x\n", &mut line, 10);
        assert_eq!(
            (line.len(), piece.complete, piece.truncated),
            (10, true, true)
        );
    }
}
