//! Switchboard's own passwords: argon2id, hashed and checked off the async threads, a bounded
//! number at a time (each takes ~19 MiB: a flood of logins must not become a memory attack).

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

use crate::app::error::AppError;
use crate::secret::Secret;

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 1024;

/// Refuses passwords too short to be worth anything, or absurdly long.
pub fn validate(password: &Secret) -> Result<(), AppError> {
    let len = password.expose().chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&len) {
        return Err(AppError::BadInput(format!(
            "password: must be between {MIN_LEN} and {MAX_LEN} characters long"
        )));
    }
    Ok(())
}

/// A new random password: 24 bytes from the OS, base64url (32 characters).
pub fn generate() -> Secret {
    Secret::new(crate::secret::random_token(24))
}

/// Computes argon2 hashes, at most `concurrency` at once; the others wait their turn.
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Hasher {
    pub fn new(concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            running: Arc::default(),
            peak: Arc::default(),
        }
    }

    /// The most hashes that ever ran at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Runs `work` on the blocking pool once a permit is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(AppError::internal)?;
        let running = self.running.clone();
        let peak = self.peak.clone();
        tokio::task::spawn_blocking(move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let result = work();
            running.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
            result
        })
        .await
        .map_err(AppError::internal)?
    }

    /// An argon2id PHC string for `password`.
    pub async fn hash(&self, password: Secret) -> Result<String, AppError> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.expose().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(AppError::internal)
        })
        .await
    }

    /// Whether `password` matches `phc`. With no hash (unknown user) a dummy check still runs,
    /// so the answer takes as long either way.
    pub async fn verify(&self, password: Secret, phc: Option<String>) -> Result<bool, AppError> {
        self.run(move || {
            let known = phc.is_some();
            let phc = phc.unwrap_or_else(|| {
                "$argon2id$v=19$m=19456,t=2,p=1$c3dpdGNoYm9hcmRkdW1teQ$3Ut3Cv7yvGkRrl0O6wo2ZWpRnh4ERi3Gv9Cw4f9bZpA"
                    .to_owned()
            });
            let parsed = PasswordHash::new(&phc).map_err(AppError::internal)?;
            let ok = Argon2::default()
                .verify_password(password.expose().as_bytes(), &parsed)
                .is_ok();
            Ok(known && ok)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_only_the_right_password() {
        let hasher = Hasher::new(2);
        let phc = hasher.hash(Secret::new("correct horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("correct horse"));
        assert!(hasher
            .verify(Secret::new("correct horse"), Some(phc.clone()))
            .await
            .unwrap());
        assert!(!hasher
            .verify(Secret::new("wrong horse"), Some(phc))
            .await
            .unwrap());
        assert!(!hasher.verify(Secret::new("anything"), None).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_hashes_run_at_once_than_the_bound() {
        let hasher = Hasher::new(2);
        let checks = (0..8).map(|_| hasher.verify(Secret::new("some password"), None));
        let answers = futures::future::join_all(checks).await;
        assert!(answers.iter().all(|a| matches!(a, Ok(false))));
        assert_eq!(hasher.peak(), 2, "8 checks at once, 2 permits");
        let unbounded = Hasher::new(8);
        let checks = (0..8).map(|_| unbounded.verify(Secret::new("some password"), None));
        futures::future::join_all(checks).await;
        assert!(
            unbounded.peak() > 2,
            "the peak counter sees parallel hashes"
        );
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(validate(&Secret::new("short")).is_err());
        assert!(validate(&Secret::new("long enough")).is_ok());
    }
}
