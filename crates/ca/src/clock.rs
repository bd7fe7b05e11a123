//! Where the CA's time comes from. Certificates carry wall-clock time; the ages of issued
//! certificates are measured on a monotonic clock, so a wall clock set back cannot keep a
//! certificate from renewal.

use std::time::{Instant, SystemTime};

/// The time, as the CA and the secret cache read it.
pub trait Clock: Send + Sync {
    /// Wall-clock time: certificates' `not_before` and `not_after`.
    fn now(&self) -> SystemTime;
    /// Monotonic time: when a certificate was issued, and how old it is.
    fn instant(&self) -> Instant;
}

/// The operating system's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to, for tests.
#[cfg(test)]
#[derive(Debug)]
pub struct FakeClock {
    wall: SystemTime,
    // An `Instant` cannot be made from a number; offsets from a real one behave the same.
    monotonic: Instant,
    elapsed: std::sync::Mutex<std::time::Duration>,
}

#[cfg(test)]
impl FakeClock {
    /// A clock reading `wall`, stopped there until [`FakeClock::advance`].
    pub fn new(wall: SystemTime) -> FakeClock {
        FakeClock {
            wall,
            monotonic: Instant::now(),
            elapsed: std::sync::Mutex::new(std::time::Duration::ZERO),
        }
    }

    /// Moves both clocks forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        *self.elapsed.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }

    fn elapsed(&self) -> std::time::Duration {
        *self.elapsed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        self.wall + self.elapsed()
    }

    fn instant(&self) -> Instant {
        self.monotonic + self.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_fake_clock_moves_only_when_advanced() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = FakeClock::new(start);
        let then = clock.instant();
        assert_eq!(clock.now(), start);
        assert_eq!(clock.instant(), then);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now(), start + Duration::from_secs(90));
        assert_eq!(clock.instant() - then, Duration::from_secs(90));
    }
}
