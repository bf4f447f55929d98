//! Wall-clock times on the wire: message timestamps are Unix milliseconds.
//!
//! The caller reads the clock and passes the time in, so this crate stays free of clocks.

use std::time::{SystemTime, UNIX_EPOCH};

/// `at` as Unix milliseconds: 0 before 1970, `u64::MAX` past the year 584 million.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_milliseconds_since_1970_and_clamps_before_it() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
