//! The credential vault: third-party secrets encrypted at rest, outside the event history, so
//! that unbinding an account can really destroy its secret.

use std::fmt;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sqlx::{PgExecutor, PgPool, Row};

use crate::domain::ids::{AccountId, UserId};
use crate::secret::Secret;

/// The 32-byte key every secret is encrypted under.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn generate() -> Self {
        Self(XChaCha20Poly1305::generate_key(&mut OsRng).into())
    }

    /// Parses the base64 form used in configuration.
    pub fn from_base64(text: &str) -> Result<Self, VaultError> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| VaultError::BadKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| VaultError::BadKey)?;
        Ok(Self(bytes))
    }

    pub fn to_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the master key must be 32 bytes, base64-encoded")]
    BadKey,
    #[error("no secret stored for account {0}")]
    Missing(AccountId),
    /// Wrong master key, or the row was tampered with or moved to another account.
    #[error("the secret of account {0} cannot be decrypted with this master key")]
    Undecryptable(AccountId),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What a stored secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// The password the user gave.
    Password,
    /// A session token a network handed out in exchange for the password, kept instead of it.
    SessionToken,
}

impl SecretKind {
    fn stored(self) -> &'static str {
        match self {
            SecretKind::Password => "password",
            SecretKind::SessionToken => "session",
        }
    }

    /// The associated data the ciphertext is bound to: the account, and for tokens the kind
    /// too, so that flipping the kind column in the database makes the row undecryptable
    /// instead of sending a token where a password is expected. Password rows keep the
    /// account id alone, as they have since the vault's first version.
    fn aad(self, account: AccountId) -> Vec<u8> {
        let mut aad = account.0.as_bytes().to_vec();
        if self == SecretKind::SessionToken {
            aad.extend_from_slice(b"/session");
        }
        aad
    }
}

#[derive(Clone)]
pub struct Vault {
    pool: PgPool,
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Vault")
    }
}

impl Vault {
    pub fn new(pool: PgPool, key: &MasterKey) -> Self {
        Self {
            pool,
            cipher: XChaCha20Poly1305::new(&key.0.into()),
        }
    }

    /// Stores (or replaces) the password of an account.
    pub async fn put(
        &self,
        user: UserId,
        account: AccountId,
        secret: &Secret,
    ) -> Result<(), VaultError> {
        self.put_kind(user, account, secret, SecretKind::Password)
            .await
    }

    /// Stores (or replaces) the secret of an account: a session token replaces the password
    /// for good.
    pub async fn put_kind(
        &self,
        user: UserId,
        account: AccountId,
        secret: &Secret,
        kind: SecretKind,
    ) -> Result<(), VaultError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: &kind.aad(account),
                },
            )
            .map_err(|_| VaultError::Undecryptable(account))?;
        sqlx::query(
            "INSERT INTO credentials (account_id, user_id, nonce, ciphertext, kind) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (account_id) DO UPDATE \
             SET nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, kind = EXCLUDED.kind, \
                 created_at = now()",
        )
        .bind(account.0)
        .bind(user.0)
        .bind(nonce.as_slice())
        .bind(ciphertext)
        .bind(kind.stored())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored secret of an account, whatever its kind.
    pub async fn get(&self, account: AccountId) -> Result<Secret, VaultError> {
        Ok(self.get_kind(account).await?.0)
    }

    /// The stored secret of an account and what it is.
    pub async fn get_kind(&self, account: AccountId) -> Result<(Secret, SecretKind), VaultError> {
        let row =
            sqlx::query("SELECT nonce, ciphertext, kind FROM credentials WHERE account_id = $1")
                .bind(account.0)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(VaultError::Missing(account))?;
        let nonce: Vec<u8> = row.try_get("nonce")?;
        let ciphertext: Vec<u8> = row.try_get("ciphertext")?;
        let kind = match row.try_get::<String, _>("kind")?.as_str() {
            "password" => SecretKind::Password,
            "session" => SecretKind::SessionToken,
            _ => return Err(VaultError::Undecryptable(account)),
        };
        if nonce.len() != 24 {
            return Err(VaultError::Undecryptable(account));
        }
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &kind.aad(account),
                },
            )
            .map_err(|_| VaultError::Undecryptable(account))?;
        String::from_utf8(plain)
            .map(|s| (Secret::new(s), kind))
            .map_err(|_| VaultError::Undecryptable(account))
    }

    /// Destroys the secret of an account (unbinding, or a binding that was refused).
    pub async fn destroy(
        &self,
        executor: impl PgExecutor<'_>,
        account: AccountId,
    ) -> Result<(), VaultError> {
        sqlx::query("DELETE FROM credentials WHERE account_id = $1")
            .bind(account.0)
            .execute(executor)
            .await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Destroys secrets whose account is not bound: a crash between storing a secret and
    /// recording its binding (or between recording an unbinding and destroying the secret)
    /// leaves one behind. The event history decides, not the views: the account's latest
    /// binding event, since an account bound again keeps its id; `grace` spares bindings still
    /// in flight (a stored secret counts from its last write). Returns how many were destroyed.
    pub async fn sweep_orphans(&self, grace: std::time::Duration) -> Result<u64, VaultError> {
        let grace_secs = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let swept = sqlx::query(
            "DELETE FROM credentials c \
              WHERE c.created_at < now() - make_interval(secs => $1) \
                AND COALESCE((SELECT e.event_type <> 'AccountBound' FROM events e \
                               WHERE e.aggregate_type = 'User' AND e.aggregate_id = c.user_id::text \
                                 AND e.event_type IN ('AccountBound', 'AccountUnbound') \
                                 AND e.payload -> e.event_type ->> 'account_id' = c.account_id::text \
                               ORDER BY e.sequence DESC LIMIT 1), true)",
        )
        .bind(grace_secs as f64)
        .execute(&self.pool)
        .await?;
        Ok(swept.rows_affected())
    }
}
