//! Errors of the application layer, each with the stable code the API shows.

use crate::connectors::ConnectorError;
use crate::domain::ids::NameError;
use crate::domain::user::UserError;
use crate::store::vault::VaultError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadInput(String),
    #[error("not logged in, or the session has expired")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A third-party server refused the account's credentials.
    #[error("{0}")]
    AuthFailed(String),
    #[error("{0}")]
    UpstreamUnavailable(String),
    /// A bound on what one session or client may hold at once.
    #[error("{0}")]
    LimitExceeded(String),
    /// Too many failed attempts: try again after the delay.
    #[error("too many failed attempts; try again in {} s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: std::time::Duration },
    /// The change was recorded, but the views did not show it within the deadline: the answer
    /// would have been stale. Repeating the change would make it twice; reading later shows it.
    #[error("the change was recorded{}, but the views did not show it within {} ms; read again shortly instead of repeating it", event_id.map(|id| format!(" (event {id})")).unwrap_or_default(), waited.as_millis())]
    ViewsBehind {
        event_id: Option<i64>,
        waited: std::time::Duration,
    },
    /// Logged in full on the server; clients only see the code.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    /// The `extensions.code` of the GraphQL error.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadInput(_) => "BAD_USER_INPUT",
            AppError::Unauthenticated => "UNAUTHENTICATED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::NotFound(_) => "NOT_FOUND",
            AppError::Conflict(_) => "CONFLICT",
            AppError::AuthFailed(_) => "AUTH_FAILED",
            AppError::UpstreamUnavailable(_) => "UPSTREAM_UNAVAILABLE",
            AppError::LimitExceeded(_) => "LIMIT_EXCEEDED",
            AppError::RateLimited { .. } => "RATE_LIMITED",
            AppError::ViewsBehind { .. } => "VIEWS_BEHIND",
            AppError::Internal(_) => "INTERNAL",
        }
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        AppError::Internal(error.to_string())
    }

    pub fn bad_input(field: &str, error: impl std::fmt::Display) -> Self {
        AppError::BadInput(format!("{field}: {error}"))
    }
}

impl From<UserError> for AppError {
    fn from(e: UserError) -> Self {
        let text = e.to_string();
        match e {
            UserError::UserNameTaken
            | UserError::DuplicateAccount { .. }
            | UserError::MetaContactExists(_)
            | UserError::ContactExists(_)
            | UserError::ContactAlreadyBound { .. }
            | UserError::AccountIdMismatch { .. }
            | UserError::UndoConflict { .. } => AppError::Conflict(text),
            UserError::UnknownSuggestion(_) => AppError::NotFound(text),
            UserError::BadThreshold => AppError::BadInput(text),
            UserError::NotRegistered
            | UserError::UnknownAccount(_)
            | UserError::UnknownContact(_)
            | UserError::UnknownMetaContact(_) => AppError::NotFound(text),
            UserError::DuplicateInRequest
            | UserError::TooFewContacts
            | UserError::ContactNotInMetaContact { .. }
            | UserError::ContactDeparted(_)
            | UserError::ContactNotDormant(_)
            | UserError::NoRouteChoice(_)
            | UserError::NotUndoable(_) => AppError::BadInput(text),
        }
    }
}

impl From<ConnectorError> for AppError {
    fn from(e: ConnectorError) -> Self {
        let text = e.to_string();
        match e {
            ConnectorError::AuthFailed => AppError::AuthFailed(text),
            ConnectorError::Unreachable(_)
            | ConnectorError::Protocol(_)
            | ConnectorError::Closed
            | ConnectorError::Refused(_) => AppError::UpstreamUnavailable(text),
            ConnectorError::InvalidAccount(_) | ConnectorError::Unsupported(_) => {
                AppError::BadInput(text)
            }
            ConnectorError::Denied(_) => AppError::Forbidden(text),
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::internal(e)
    }
}

impl From<crate::store::intake::IntakeError> for AppError {
    fn from(e: crate::store::intake::IntakeError) -> Self {
        AppError::internal(e)
    }
}

impl From<VaultError> for AppError {
    fn from(e: VaultError) -> Self {
        AppError::internal(e)
    }
}

impl From<NameError> for AppError {
    fn from(e: NameError) -> Self {
        AppError::BadInput(e.to_string())
    }
}
