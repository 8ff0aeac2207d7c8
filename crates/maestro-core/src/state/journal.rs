//! The framing of a job's journal: append-only records, each one line that says its own length
//! and checksum.
//!
//! A record is `<kind> <length> <checksum> <payload>\n`: `kind` is `transition` or `step`,
//! `length` the payload's size in bytes (decimal), `checksum` the first 16 hex digits of the
//! SHA-256 of `<kind> <payload>`, and the payload the entry's compact JSON, exactly the bytes
//! the history digests are computed over (compact JSON holds no raw newline, so a record is one
//! line). What a crash can leave is a last line without its newline: a *torn tail*, never
//! acknowledged, which readers ignore and the next append cuts off. A complete line that does
//! not check out (edited, or garbage) is corrupt and reported, never read as something else.

use super::sha256_hex;

/// What a journal record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A [`Transition`](super::Transition).
    Transition,
    /// A [`StepRecord`](super::StepRecord).
    Step,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Transition => "transition",
            Self::Step => "step",
        }
    }

    fn parse(text: &[u8]) -> Option<Self> {
        match text {
            b"transition" => Some(Self::Transition),
            b"step" => Some(Self::Step),
            _ => None,
        }
    }
}

/// One record as read: its kind and its payload's exact bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// What it holds.
    pub kind: Kind,
    /// The entry's JSON, byte for byte as written.
    pub payload: &'a [u8],
}

/// A journal as read.
#[derive(Debug, Default)]
pub struct Parsed<'a> {
    /// Every complete record, oldest first.
    pub records: Vec<Record<'a>>,
    /// How many bytes the complete records take: anything after is a torn tail.
    pub valid_len: usize,
}

/// A complete record that does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {index} (at byte {offset}) {problem}")]
pub struct Corruption {
    /// The record's place, from 1.
    pub index: usize,
    /// Where it starts.
    pub offset: usize,
    /// What is wrong with it.
    pub problem: &'static str,
}

fn checksum(kind: Kind, payload: &[u8]) -> String {
    let mut framed = Vec::with_capacity(kind.as_str().len() + 1 + payload.len());
    framed.extend_from_slice(kind.as_str().as_bytes());
    framed.push(b' ');
    framed.extend_from_slice(payload);
    sha256_hex(&framed)[..16].to_owned()
}

/// Append the record of `payload` (compact JSON, no newline) to `out`.
pub fn encode(kind: Kind, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(!payload.contains(&b'\n'), "a payload is one line");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.extend_from_slice(format!(" {} {} ", payload.len(), checksum(kind, payload)).as_bytes());
    out.extend_from_slice(payload);
    out.push(b'\n');
}

/// Read every record of `bytes`; a last line without its newline is a torn tail, left out.
pub fn parse(bytes: &[u8]) -> Result<Parsed<'_>, Corruption> {
    let mut parsed = Parsed::default();
    let mut offset = 0;
    while let Some(end) = bytes[offset..].iter().position(|b| *b == b'\n') {
        let line = &bytes[offset..offset + end];
        let index = parsed.records.len() + 1;
        let corrupt = |problem| Corruption {
            index,
            offset,
            problem,
        };
        let mut fields = line.splitn(4, |b| *b == b' ');
        let (Some(kind), Some(length), Some(sum), Some(payload)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(corrupt("is not a journal record"));
        };
        let kind = Kind::parse(kind).ok_or_else(|| corrupt("has an unknown kind"))?;
        let length: usize = std::str::from_utf8(length)
            .ok()
            // Written as Maestro writes it, digits and no leading zero: the checksum does not
            // cover the frame, so a frame that may be written two ways could be changed unseen.
            .filter(|text| {
                text.bytes().all(|b| b.is_ascii_digit()) && (*text == "0" || !text.starts_with('0'))
            })
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| corrupt("has no valid length"))?;
        if length != payload.len() {
            return Err(corrupt("is not as long as it says"));
        }
        if sum != checksum(kind, payload).as_bytes() {
            return Err(corrupt("does not match its checksum: it was edited"));
        }
        parsed.records.push(Record { kind, payload });
        offset += end + 1;
    }
    parsed.valid_len = offset;
    Ok(parsed)
}

/// `bytes` with every line's length and checksum recomputed from its payload: what someone
/// editing a journal by hand and knowing its format would do (for tests of what the audit log
/// still catches).
#[doc(hidden)]
pub fn reseal(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for line in bytes.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
        let mut fields = line.splitn(4, |b| *b == b' ');
        let kind = fields.next().and_then(Kind::parse);
        let payload = fields.nth(2);
        match (kind, payload) {
            (Some(kind), Some(payload)) => encode(kind, payload, &mut out),
            _ => {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(entries: &[(Kind, &str)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (kind, payload) in entries {
            encode(*kind, payload.as_bytes(), &mut bytes);
        }
        bytes
    }

    #[test]
    fn records_read_back_exactly() {
        let bytes = journal(&[
            (Kind::Transition, r#"{"a":1}"#),
            (Kind::Step, r#"{"b":"x y"}"#),
        ]);
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.valid_len, bytes.len());
        assert_eq!(
            parsed.records,
            [
                Record {
                    kind: Kind::Transition,
                    payload: br#"{"a":1}"#
                },
                Record {
                    kind: Kind::Step,
                    payload: br#"{"b":"x y"}"#
                },
            ]
        );
        assert!(parse(b"").unwrap().records.is_empty());
    }

    #[test]
    fn a_torn_tail_is_left_out_at_every_cut() {
        let whole = journal(&[(Kind::Transition, r#"{"a":1}"#), (Kind::Step, r#"{"b":2}"#)]);
        let first = journal(&[(Kind::Transition, r#"{"a":1}"#)]).len();
        for cut in first..whole.len() {
            let parsed = parse(&whole[..cut]).unwrap();
            assert_eq!(parsed.records.len(), 1, "cut at {cut}");
            assert_eq!(parsed.valid_len, first);
        }
        for cut in 0..first {
            assert!(parse(&whole[..cut]).unwrap().records.is_empty());
        }
    }

    #[test]
    fn an_edited_or_garbage_record_is_corrupt_never_misread() {
        let bytes = journal(&[(Kind::Transition, r#"{"state":"FAILED"}"#)]);
        let edited = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("FAILED", "PASSED");
        let error = parse(edited.as_bytes()).unwrap_err();
        assert_eq!((error.index, error.offset), (1, 0));
        assert!(error.to_string().contains("checksum"), "{error}");
        let mut longer = bytes.clone();
        longer.splice(bytes.len() - 2..bytes.len() - 2, b" ".iter().copied());
        assert!(parse(&longer).is_err());
        // The same record with its length written another way (a leading zero).
        let text = String::from_utf8(bytes.clone()).unwrap();
        let (kind, rest) = text.split_once(' ').unwrap();
        let padded = format!("{kind} 0{rest}");
        let error = parse(padded.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("no valid length"), "{error}");
        for garbage in [
            &b"hello\n"[..],
            b"transition x 0000 {}\n",
            b"other 2 0000000000000000 {}\n",
            b"\0\0\0\0\n",
        ] {
            let mut bytes = bytes.clone();
            bytes.extend_from_slice(garbage);
            let error = parse(&bytes).unwrap_err();
            assert_eq!(error.index, 2, "{garbage:?}");
        }
    }
}
