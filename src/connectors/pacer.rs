//! Paces one node's login attempts: at most `concurrency` in flight and at most `per_second`
//! started per second. A node that resumes many users after a restart, or whose accounts all
//! drop at once (a network blip), would otherwise log every account in at the same instant, and
//! networks answer such stampedes with throttling or bans.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The node's login gate, shared by all its supervisors: a generic cell rate algorithm, so a
/// burst of up to `concurrency` logins (one user's accounts) starts at once, and a longer run
/// (many users resuming) at `per_second`.
#[derive(Debug)]
pub struct Pacer {
    permits: Arc<Semaphore>,
    /// Time between two starts in a long run.
    spacing: Duration,
    /// How far ahead of its time a start may be: the burst.
    tolerance: Duration,
    /// The theoretical time of the next start.
    next: Mutex<Instant>,
}

/// Leave to run one login attempt; the slot is free again once it is dropped.
#[derive(Debug)]
pub struct Pass {
    _permit: OwnedSemaphorePermit,
}

impl Pacer {
    /// At most `concurrency` attempts at once (at least one), started at most `per_second` a
    /// second in a long run (not limited when not finite or not positive), up to
    /// `concurrency` of them at once.
    pub fn new(concurrency: usize, per_second: f64) -> Self {
        let concurrency = concurrency.max(1);
        let spacing = if per_second.is_finite() && per_second > 0.0 {
            Duration::from_secs_f64(1.0 / per_second)
        } else {
            Duration::ZERO
        };
        let burst = u32::try_from(concurrency - 1).unwrap_or(u32::MAX);
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            spacing,
            tolerance: spacing.saturating_mul(burst),
            next: Mutex::new(Instant::now()),
        }
    }

    /// No pacing to speak of (tests, tools).
    pub fn unlimited() -> Self {
        Self::new(Semaphore::MAX_PERMITS, f64::INFINITY)
    }

    /// A pass now, if both a slot and a start are free right now.
    pub fn try_enter(&self) -> Option<Pass> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let due = (*next).max(now);
        if due - now > self.tolerance {
            return None;
        }
        *next = due + self.spacing;
        Some(Pass { _permit: permit })
    }

    /// Waits for a slot, then for the next free start.
    pub async fn enter(&self) -> Pass {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the pacer's semaphore is never closed");
        let start = {
            let now = Instant::now();
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let due = (*next).max(now);
            *next = due + self.spacing;
            (due.checked_sub(self.tolerance).unwrap_or(now)).max(now)
        };
        tokio::time::sleep_until(start).await;
        Pass { _permit: permit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_starts_at_once_and_a_long_run_is_spaced() {
        let pacer = Pacer::new(4, 10.0);
        let t0 = Instant::now();
        let mut passes = Vec::new();
        for _ in 0..4 {
            passes.push(pacer.try_enter().expect("the burst starts at once"));
        }
        assert!(pacer.try_enter().is_none(), "every slot is taken");
        passes.clear();
        // The burst used the next 400 ms: the fifth start waits 100 ms, the sixth 200.
        assert!(pacer.try_enter().is_none(), "a slot, but no start free");
        let _fifth = pacer.enter().await;
        assert_eq!(t0.elapsed(), Duration::from_millis(100));
        let _sixth = pacer.enter().await;
        assert_eq!(t0.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn slots_are_bounded_however_free_the_starts() {
        let pacer = Arc::new(Pacer::new(2, 1000.0));
        let t0 = Instant::now();
        let first = pacer.try_enter().unwrap();
        let _second = pacer.try_enter().unwrap();
        let waiting = tokio::spawn({
            let pacer = Arc::clone(&pacer);
            async move {
                let _pass = pacer.enter().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "no slot is free");
        drop(first);
        let started = waiting.await.unwrap();
        assert_eq!(
            started - t0,
            Duration::from_secs(5),
            "as soon as a slot is free"
        );
        assert!(Pacer::unlimited().try_enter().is_some());
    }
}
