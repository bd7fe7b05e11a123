//! A counting gate: scopes compile at most one per core at once.

use std::sync::Mutex;

/// A counting gate for blocking threads: at most `max` inside at once, the rest wait.
pub(super) struct Turns {
    inside: Mutex<usize>,
    left: std::sync::Condvar,
    max: usize,
}

impl Turns {
    pub(super) fn new(max: usize) -> Self {
        Turns {
            inside: Mutex::new(0),
            left: std::sync::Condvar::new(),
            max: max.max(1),
        }
    }

    /// Waits for a turn; it ends when the returned guard drops.
    pub(super) fn enter(&self) -> Turn<'_> {
        let mut inside = self.inside.lock().unwrap_or_else(|p| p.into_inner());
        while *inside >= self.max {
            inside = self.left.wait(inside).unwrap_or_else(|p| p.into_inner());
        }
        *inside += 1;
        Turn(self)
    }
}

/// A turn of [`Turns`].
pub(super) struct Turn<'a>(&'a Turns);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.inside.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.0.left.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn turns_let_at_most_their_number_in_at_once() {
        let turns = Turns::new(2);
        let (inside, most) = (
            std::sync::atomic::AtomicUsize::new(0),
            std::sync::atomic::AtomicUsize::new(0),
        );
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let _turn = turns.enter();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::yield_now();
                    inside.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 2);
        assert_eq!(*turns.inside.lock().expect("lock"), 0);
    }
}
