//! Bounds on list inputs: a request names at most this many things, refused before any work.

use super::AppError;

/// Contacts (or other ids) one request may name.
pub const MAX_IDS: usize = 256;
/// Accounts one registration may bind.
pub const MAX_ACCOUNTS: usize = 32;
/// Event kinds one history filter may name (there are fewer kinds than this).
pub const MAX_KINDS: usize = 64;

/// `BAD_USER_INPUT` when a list of `len` items is longer than `max`.
pub fn check_list(field: &str, len: usize, max: usize) -> Result<(), AppError> {
    if len > max {
        return Err(AppError::BadInput(format!(
            "{field}: at most {max} items, {len} given"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_longer_than_the_cap_are_bad_input() {
        assert!(check_list("contactIds", MAX_IDS, MAX_IDS).is_ok());
        let refused = check_list("contactIds", 20_000, MAX_IDS).unwrap_err();
        assert_eq!(refused.code(), "BAD_USER_INPUT");
        assert!(refused.to_string().contains("at most 256"), "{refused}");
    }
}
