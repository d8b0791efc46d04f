//! Ring-buffer records to `Event`s. Lengths are checked before anything is read; an
//! unknown or short record is an error value for the caller to count, never a panic.
use portex_common::{EVENT_SIZE, Event, kind};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event ({EVENT_SIZE} bytes)")]
    Short(usize),
    #[error("record of unknown kind {0}")]
    UnknownKind(u16),
}

pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    let ev = Event::from_bytes(buf).ok_or(DecodeError::Short(buf.len()))?;
    match ev.kind {
        kind::STATE | kind::CONNECT_RET | kind::BIND_RET | kind::SYN_RETRANS => Ok(ev),
        k => Err(DecodeError::UnknownKind(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_known_kinds_and_counts_the_rest() {
        let mut e = Event::zeroed();
        e.kind = kind::STATE;
        assert_eq!(decode(e.as_bytes()), Ok(e));
        assert_eq!(decode(&e.as_bytes()[..10]), Err(DecodeError::Short(10)));
        e.kind = 999;
        assert_eq!(decode(e.as_bytes()), Err(DecodeError::UnknownKind(999)));
        assert_eq!(decode(&[]), Err(DecodeError::Short(0)));
    }
}
