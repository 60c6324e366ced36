//! Switchboard's own passwords: argon2id, hashed and checked off the async threads.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;

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

/// An argon2id PHC string for `password`.
pub async fn hash(password: Secret) -> Result<String, AppError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(AppError::internal)
    })
    .await
    .map_err(AppError::internal)?
}

/// Whether `password` matches `phc`. With no hash (unknown user) a dummy check still runs, so
/// the answer takes as long either way.
pub async fn verify(password: Secret, phc: Option<String>) -> Result<bool, AppError> {
    tokio::task::spawn_blocking(move || {
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
    .map_err(AppError::internal)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_only_the_right_password() {
        let phc = hash(Secret::new("correct horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("correct horse"));
        assert!(verify(Secret::new("correct horse"), Some(phc.clone()))
            .await
            .unwrap());
        assert!(!verify(Secret::new("wrong horse"), Some(phc)).await.unwrap());
        assert!(!verify(Secret::new("anything"), None).await.unwrap());
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(validate(&Secret::new("short")).is_err());
        assert!(validate(&Secret::new("long enough")).is_ok());
    }
}
