//! Trace ids: where they come from and what they may look like.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated trace id: 1 to 128 characters of `[A-Za-z0-9._:-]`.
///
/// The character set is narrow on purpose: the id is written into log headers, audit records and
/// every step's environment, so it must never carry whitespace, quotes or control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TraceId(String);

/// Why a string is not an acceptable trace id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraceIdError {
    /// The id is empty.
    #[error("trace id is empty")]
    Empty,
    /// The id is longer than 128 characters.
    #[error("trace id is {len} characters long; at most 128 are allowed")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The id holds a character outside `[A-Za-z0-9._:-]`.
    #[error("trace id contains {found:?}; only letters, digits, '.', '_', ':' and '-' are allowed")]
    BadCharacter {
        /// The first offending character.
        found: char,
    },
}

impl TraceId {
    /// Validate `value` as a trace id.
    pub fn parse(value: &str) -> Result<Self, TraceIdError> {
        if value.is_empty() {
            return Err(TraceIdError::Empty);
        }
        if value.len() > 128 {
            return Err(TraceIdError::TooLong { len: value.len() });
        }
        if let Some(found) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(TraceIdError::BadCharacter { found });
        }
        Ok(Self(value.to_owned()))
    }

    /// A fresh random trace id: 32 lower-case hex digits, the W3C trace-context shape.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Pick the trace id for a request: an explicit one, else the caller's `TRACE_ID`, else a new one.
    pub fn resolve(explicit: Option<&str>, inherited: Option<&str>) -> Result<Self, TraceIdError> {
        match explicit.or(inherited) {
            Some(value) => Self::parse(value),
            None => Ok(Self::generate()),
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TraceId {
    /// The id as a W3C trace-context trace id (32 lower-case hex digits, not all zero): the id
    /// itself when it already is one (a UUID's dashes dropped), else a fixed hash of it, so
    /// that the same `TRACE_ID` always gives the same `TRACEPARENT` trace.
    pub fn w3c_trace_id(&self) -> String {
        let hex: String = self.0.chars().filter(|c| *c != '-').collect();
        if hex.len() == 32
            && hex.chars().all(|c| c.is_ascii_hexdigit())
            && hex.chars().any(|c| c != '0')
        {
            return hex.to_ascii_lowercase();
        }
        // Two 64-bit FNV-1a hashes with different offsets: stable across versions and
        // platforms, which is all this needs (it is not a security boundary).
        let fnv = |offset: u64| {
            self.0.bytes().fold(offset, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
            })
        };
        let (high, low) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142));
        let high = if high == 0 && low == 0 { 1 } else { high };
        format!("{high:016x}{low:016x}")
    }

    /// The W3C `traceparent` header of a span of this trace: `00-<trace id>-<span id>-01`.
    pub fn traceparent(&self, span: &SpanId) -> String {
        format!("00-{}-{}-01", self.w3c_trace_id(), span.as_str())
    }
}

/// A W3C trace-context span id: 16 lower-case hex digits, not all zero. Each step has one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SpanId(String);

impl SpanId {
    /// A fresh random span id.
    pub fn generate() -> Self {
        loop {
            let bytes = uuid::Uuid::new_v4().into_bytes();
            let id = u64::from_be_bytes([
                bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[7], bytes[9],
            ]);
            if id != 0 {
                return Self(format!("{id:016x}"));
            }
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TraceId {
    type Error = TraceIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TraceId> for String {
    fn from(value: TraceId) -> Self {
        value.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_w3c_and_uuid_shapes() {
        assert!(TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").is_ok());
        assert!(TraceId::parse("0192f0c1-aaaa-7bbb-8ccc-123456789abc").is_ok());
    }

    #[test]
    fn rejects_hostile_values() {
        assert_eq!(TraceId::parse(""), Err(TraceIdError::Empty));
        assert_eq!(
            TraceId::parse("a b"),
            Err(TraceIdError::BadCharacter { found: ' ' })
        );
        assert!(TraceId::parse("../../etc").is_err());
        assert!(TraceId::parse("x\ny").is_err());
        assert_eq!(
            TraceId::parse(&"a".repeat(129)),
            Err(TraceIdError::TooLong { len: 129 })
        );
    }

    #[test]
    fn traceparent_has_the_w3c_shape() {
        let span = SpanId::generate();
        assert_eq!(span.as_str().len(), 16);
        assert!(span.as_str().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(span, SpanId::generate());
        let trace = TraceId::parse("4BF92F3577B34DA6A3CE929D0E0E4736").unwrap();
        assert_eq!(
            trace.traceparent(&span),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span}-01")
        );
        let uuid = TraceId::parse("0192f0c1-aaaa-7bbb-8ccc-123456789abc").unwrap();
        assert_eq!(uuid.w3c_trace_id(), "0192f0c1aaaa7bbb8ccc123456789abc");
        let named = TraceId::parse("deploy-42").unwrap();
        let hashed = named.w3c_trace_id();
        assert_eq!(hashed.len(), 32);
        assert!(hashed.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hashed, TraceId::parse("deploy-42").unwrap().w3c_trace_id());
        assert_ne!(hashed, TraceId::parse("deploy-43").unwrap().w3c_trace_id());
        let zero = TraceId::parse(&"0".repeat(32)).unwrap();
        assert_ne!(zero.w3c_trace_id(), "0".repeat(32));
    }

    #[test]
    fn explicit_wins_over_inherited_and_generation_is_valid() {
        let id = TraceId::resolve(Some("explicit"), Some("inherited")).unwrap();
        assert_eq!(id.as_str(), "explicit");
        let id = TraceId::resolve(None, Some("inherited")).unwrap();
        assert_eq!(id.as_str(), "inherited");
        let generated = TraceId::resolve(None, None).unwrap();
        assert!(TraceId::parse(generated.as_str()).is_ok());
        assert_eq!(generated.as_str().len(), 32);
    }
}
