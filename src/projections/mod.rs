//! Read models built from the events by catch-up readers: the unified contact list and bound
//! accounts, and the history (audit log). Each can be rebuilt from zero.

pub mod contacts;
pub mod diff;
pub mod history;
pub mod horizon;
pub mod live;
pub mod login_report;
pub mod notify;
pub mod progress;
pub mod runner;
pub mod verify;

use std::sync::Arc;

use runner::Projection;

/// Every projection this build maintains.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(contacts::ContactsProjection),
        Arc::new(history::HistoryProjection),
    ]
}

/// The projection with this name.
pub fn by_name(name: &str) -> Option<Arc<dyn Projection>> {
    all().into_iter().find(|p| p.name() == name)
}
