//! Logging a repeated condition without letting a flood of packets flood the log.

/// Lets a condition be logged at most `burst` times per window, then once more with
/// how many were left out.
#[derive(Debug)]
pub struct Throttle {
    burst: u32,
    window_ms: i64,
    window_start_ms: i64,
    logged: u32,
    suppressed: u64,
}

impl Throttle {
    pub fn new(burst: u32, window_ms: i64) -> Self {
        Throttle {
            burst,
            window_ms,
            window_start_ms: i64::MIN,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Some(number left out since the last log) when this one should be logged.
    pub fn hit(&mut self, now_ms: i64) -> Option<u64> {
        if now_ms.saturating_sub(self.window_start_ms) >= self.window_ms {
            self.window_start_ms = now_ms;
            self.logged = 0;
        }
        if self.logged < self.burst {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_logs_a_burst_then_counts() {
        let mut t = Throttle::new(2, 10_000);
        assert_eq!(t.hit(0), Some(0));
        assert_eq!(t.hit(1), Some(0));
        assert_eq!(t.hit(2), None);
        assert_eq!(t.hit(3), None);
        assert_eq!(t.hit(10_005), Some(2));
    }
}
