//! The text the load generator sends as chat: `RUN:SEQ:NANOS:` padded with dots to a fixed
//! length. It is plain ASCII so any version-1 server relays it untouched; the run id keeps a
//! late datagram from an earlier ramp step from counting in a later one.

use std::io::Write;

/// Shortest payload that always fits the three numbers.
pub const MIN_PAYLOAD_LEN: usize = 64;

/// What a receiver reads back from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Which load run sent it.
    pub run: u32,
    /// Message index within the run, unique across senders.
    pub seq: u64,
    /// Send time in nanoseconds since the run's shared base instant.
    pub sent_nanos: u64,
}

/// Writes the payload for `stamp` into `out`, padded to `len` bytes (at least
/// [`MIN_PAYLOAD_LEN`]).
pub fn write_payload(stamp: Stamp, len: usize, out: &mut Vec<u8>) {
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}:{}:{}:", stamp.run, stamp.seq, stamp.sent_nanos);
    let written = out.len() - start;
    out.resize(start + written.max(len), b'.');
}

/// Reads a payload's stamp; `None` for text this tool did not send.
pub fn parse_payload(text: &str) -> Option<Stamp> {
    let mut fields = text.splitn(4, ':');
    let run = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let sent_nanos = fields.next()?.parse().ok()?;
    fields.next()?;
    Some(Stamp {
        run,
        seq,
        sent_nanos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_fixed_length() {
        let stamp = Stamp {
            run: u32::MAX,
            seq: u64::MAX,
            sent_nanos: u64::MAX,
        };
        let mut out = Vec::new();
        write_payload(stamp, MIN_PAYLOAD_LEN, &mut out);
        assert_eq!(out.len(), MIN_PAYLOAD_LEN, "three maxed numbers still fit");
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(parse_payload(text), Some(stamp));

        out.clear();
        let small = Stamp {
            run: 7,
            seq: 3,
            sent_nanos: 99,
        };
        write_payload(small, 200, &mut out);
        assert_eq!(out.len(), 200);
        assert_eq!(
            parse_payload(std::str::from_utf8(&out).unwrap()),
            Some(small)
        );
    }

    #[test]
    fn foreign_text_is_not_a_stamp() {
        assert_eq!(parse_payload("hello"), None);
        assert_eq!(parse_payload("m1 joined"), None);
        assert_eq!(parse_payload("1:2:3"), None);
    }
}
