//! Typed ids and validated names: parsed once at the boundary, trusted after.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace for deriving a user's id from the normalised user name (UUIDv5).
const USER_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5b1e_7d0c_4a2f_4c1e_9d7b_2f0e_8c3a_1d64);
/// Namespace for deriving an account's id from its user and upstream identity (UUIDv5).
const ACCOUNT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x7a41_c2e9_0b6d_4f35_8e17_d4a9_62c0_5f18);
/// Namespace for deriving the meta-contact a match policy creates from its two contacts.
const MATCH_META_NAMESPACE: Uuid = Uuid::from_u128(0x3e5d_9a70_1c84_4d2b_b6f1_08ae_7c35_92d4);
/// Namespace for deriving a contact's id from its account and handle (UUIDv5).
const CONTACT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x0c9f_3b52_6e1d_4b8a_a0f4_7c2d_5e91_3b07);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new_random() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A Switchboard user; derived from the normalised user name, so two registrations of one
    /// name address the same event stream and the store's sequence key decides the winner.
    UserId
);
uuid_id!(
    /// One third-party account bound to a user.
    AccountId
);
uuid_id!(
    /// One contact of one bound account; derived from account and handle.
    ContactId
);
uuid_id!(
    /// A meta-contact: several contacts bound together as one real person.
    MetaContactId
);

/// A person the user talks to: a meta-contact, or a contact in none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PersonRef {
    Contact(ContactId),
    MetaContact(MetaContactId),
}

impl PersonRef {
    pub fn uuid(self) -> Uuid {
        match self {
            PersonRef::Contact(id) => id.0,
            PersonRef::MetaContact(id) => id.0,
        }
    }
}

impl UserId {
    pub fn for_name(name: &UserName) -> Self {
        Self(Uuid::new_v5(
            &USER_ID_NAMESPACE,
            name.normalized().as_bytes(),
        ))
    }
}

/// What makes a bound account the same account: its network, server and handle. Binding the
/// same key again is binding the same account, with the same id and contacts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AccountKey {
    pub protocol: Protocol,
    /// Lower-cased: host names compare without case.
    pub server: String,
    pub handle: Handle,
}

impl AccountKey {
    pub fn new(protocol: Protocol, server: &str, handle: &Handle) -> Self {
        Self {
            protocol,
            server: server.trim().to_ascii_lowercase(),
            handle: handle.clone(),
        }
    }
}

impl fmt::Display for AccountKey {
    /// One string per key (NUL cannot occur in any part), usable as a map key anywhere.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\0{}\0{}",
            self.protocol,
            self.server,
            self.handle.as_str()
        )
    }
}

impl AccountId {
    /// The id an account gets the first time this user binds it: derived, so the same account
    /// bound again (or by two racing requests) has one id.
    pub fn for_binding(user: UserId, key: &AccountKey) -> Self {
        let mut name = user.0.as_bytes().to_vec();
        name.extend_from_slice(key.to_string().as_bytes());
        Self(Uuid::new_v5(&ACCOUNT_ID_NAMESPACE, &name))
    }
}

impl MetaContactId {
    /// The meta-contact a policy makes of two contacts: derived, so the decision needs no
    /// randomness and a replayed decision makes the same one.
    pub fn for_match(a: ContactId, b: ContactId) -> Self {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let mut name = low.0.as_bytes().to_vec();
        name.extend_from_slice(high.0.as_bytes());
        Self(Uuid::new_v5(&MATCH_META_NAMESPACE, &name))
    }
}

impl ContactId {
    pub fn for_handle(account: AccountId, handle: &Handle) -> Self {
        let mut key = account.0.as_bytes().to_vec();
        key.extend_from_slice(handle.as_str().as_bytes());
        Self(Uuid::new_v5(&CONTACT_ID_NAMESPACE, &key))
    }
}

/// Why a name or handle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must be between {min} and {max} characters long")]
    Length { min: usize, max: usize },
    #[error(
        "may contain only letters a-z, digits, '.', '_' and '-', and must start with a letter"
    )]
    Characters,
    #[error("must not be blank or contain control characters")]
    Blank,
    /// Not a valid id on that network; says what the form is.
    #[error("not a valid {protocol} id: {expected}")]
    Form {
        protocol: Protocol,
        expected: &'static str,
    },
}

/// A Switchboard user name: 3–32 characters, ASCII letters, digits, `.`, `_`, `-`, starting with
/// a letter. Compared case-insensitively; shown as typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    pub const MIN: usize = 3;
    pub const MAX: usize = 32;

    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let raw = raw.trim();
        let len = raw.chars().count();
        if !(Self::MIN..=Self::MAX).contains(&len) {
            return Err(NameError::Length {
                min: Self::MIN,
                max: Self::MAX,
            });
        }
        let mut chars = raw.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(NameError::Characters);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness is decided on.
    pub fn normalized(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A human-chosen name such as a meta-contact's: 1–64 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().any(char::is_control) {
            return Err(NameError::Blank);
        }
        if trimmed.chars().count() > Self::MAX {
            return Err(NameError::Length {
                min: 1,
                max: Self::MAX,
            });
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The IM networks Switchboard can speak (some arrive in later builds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Protocol {
    Xmpp,
    Irc,
    Matrix,
    Nostr,
}

impl Protocol {
    /// Whether handles on this network compare case-insensitively.
    fn folds_case(self) -> bool {
        matches!(self, Protocol::Xmpp | Protocol::Matrix)
    }

    /// Whether the network's server keeps the contact list (XMPP roster, Matrix `m.direct`,
    /// Nostr follow list). IRC keeps none: an IRC account's contacts are the user's own list.
    pub fn has_server_roster(self) -> bool {
        !matches!(self, Protocol::Irc)
    }

    /// Whether a message sent to someone offline waits for them on the network (XMPP offline
    /// storage, a Matrix room, a Nostr relay). IRC drops it: the nick must be there.
    pub fn keeps_messages_for_the_offline(self) -> bool {
        !matches!(self, Protocol::Irc)
    }

    /// The network's name for people to read.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Xmpp => "XMPP",
            Protocol::Irc => "IRC",
            Protocol::Matrix => "Matrix",
            Protocol::Nostr => "Nostr",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Xmpp => "XMPP",
            Protocol::Irc => "IRC",
            Protocol::Matrix => "MATRIX",
            Protocol::Nostr => "NOSTR",
        })
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    /// The stored form ([`fmt::Display`]): `XMPP`, `IRC`, `MATRIX`, `NOSTR`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "XMPP" => Ok(Protocol::Xmpp),
            "IRC" => Ok(Protocol::Irc),
            "MATRIX" => Ok(Protocol::Matrix),
            "NOSTR" => Ok(Protocol::Nostr),
            other => Err(format!("unknown protocol {other:?}")),
        }
    }
}

/// A user's or contact's id on one network, normalised for that network (e.g. a bare JID in
/// lower case for XMPP).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Handle(String);

impl Handle {
    pub const MAX: usize = 256;

    pub fn parse(protocol: Protocol, raw: &str) -> Result<Self, NameError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(NameError::Blank);
        }
        if trimmed.len() > Self::MAX {
            return Err(NameError::Length {
                min: 1,
                max: Self::MAX,
            });
        }
        // IRC nicks fold ASCII letters only (below); XMPP and Matrix fold like Unicode.
        let value = if protocol.folds_case() {
            trimmed.to_lowercase()
        } else {
            trimmed.to_owned()
        };
        let form = |expected| NameError::Form { protocol, expected };
        match protocol {
            Protocol::Xmpp => Ok(Self(value)),
            Protocol::Irc => {
                let nick = value.to_ascii_lowercase();
                if !is_irc_nick(&nick) {
                    return Err(form(
                        "a nick: a letter or one of []\\`_^{|} first, then also digits and '-', at most 32",
                    ));
                }
                Ok(Self(nick))
            }
            Protocol::Matrix => {
                if !is_matrix_user_id(&value) {
                    return Err(form("a user id like @alice:example.org"));
                }
                Ok(Self(value))
            }
            Protocol::Nostr => nostr_public_key(&value)
                .map(Self)
                .ok_or(form("a public key: npub1… or 64 hex digits")),
        }
    }

    /// A handle read back from storage, where it was stored already normalised.
    pub fn from_stored(normalized: &str) -> Self {
        Self(normalized.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 2812's nickname, with the length most servers allow today.
fn is_irc_nick(nick: &str) -> bool {
    let special = |c: char| "[]\\`_^{|}".contains(c);
    let mut chars = nick.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    nick.len() <= 32
        && (first.is_ascii_alphabetic() || special(first))
        && chars.all(|c| c.is_ascii_alphanumeric() || special(c) || c == '-')
}

/// A Nostr public key in its one stored form, lower-case hex, from `npub1…` (NIP-19, also
/// with a `nostr:` prefix) or 64 hex digits in any case.
fn nostr_public_key(raw: &str) -> Option<String> {
    let raw = raw
        .strip_prefix("nostr:")
        .unwrap_or(raw)
        .to_ascii_lowercase();
    if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(raw);
    }
    let bytes = bech32_decode(&raw, "npub")?;
    (bytes.len() == 32).then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The payload of a lower-case bech32 string (BIP-173) with human-readable part `hrp`.
fn bech32_decode(text: &str, hrp: &str) -> Option<Vec<u8>> {
    const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    let (prefix, data) = text.rsplit_once('1')?;
    if prefix != hrp || data.len() < 6 {
        return None;
    }
    let values: Vec<u8> = data
        .bytes()
        .map(|c| CHARSET.iter().position(|&x| x == c).map(|v| v as u8))
        .collect::<Option<_>>()?;
    let polymod = |values: &[u8]| {
        const GEN: [u32; 5] = [
            0x3b6a_57b2,
            0x2650_8e6d,
            0x1ea1_19fa,
            0x3d42_33dd,
            0x2a14_62b3,
        ];
        values.iter().fold(1u32, |chk, &v| {
            let top = chk >> 25;
            let mut chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(v);
            for (i, g) in GEN.iter().enumerate() {
                if (top >> i) & 1 == 1 {
                    chk ^= g;
                }
            }
            chk
        })
    };
    let mut checked: Vec<u8> = hrp.bytes().map(|b| b >> 5).collect();
    checked.push(0);
    checked.extend(hrp.bytes().map(|b| b & 31));
    checked.extend(&values);
    if polymod(&checked) != 1 {
        return None;
    }
    // 5-bit groups to bytes; leftover padding bits must be zero.
    let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for &v in &values[..values.len() - 6] {
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    (bits < 5 && acc & ((1 << bits) - 1) == 0).then_some(out)
}

/// `@localpart:server`, the localpart in the characters Matrix allows for new user ids.
fn is_matrix_user_id(id: &str) -> bool {
    let Some((local, server)) = id.strip_prefix('@').and_then(|r| r.split_once(':')) else {
        return false;
    };
    !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._=-/+".contains(c))
        && !server.is_empty()
        && server
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_key_ignores_server_case_and_its_id_is_stable_per_user() {
        let handle = Handle::parse(Protocol::Xmpp, "Bob@Example.org").unwrap();
        let key = AccountKey::new(Protocol::Xmpp, " Chat.Example.org:5222", &handle);
        assert_eq!(
            key,
            AccountKey::new(Protocol::Xmpp, "chat.example.org:5222", &handle)
        );
        let alice = UserId::for_name(&UserName::parse("alice").unwrap());
        let carol = UserId::for_name(&UserName::parse("carol").unwrap());
        assert_eq!(
            AccountId::for_binding(alice, &key),
            AccountId::for_binding(alice, &key)
        );
        assert_ne!(
            AccountId::for_binding(alice, &key),
            AccountId::for_binding(carol, &key)
        );
        let irc = AccountKey::new(Protocol::Irc, "chat.example.org:5222", &handle);
        assert_ne!(
            AccountId::for_binding(alice, &key),
            AccountId::for_binding(alice, &irc)
        );
    }

    #[test]
    fn user_names_are_validated_and_compared_case_insensitively() {
        let a = UserName::parse("Alice.B").unwrap();
        let b = UserName::parse("alice.b").unwrap();
        assert_eq!(a.as_str(), "Alice.B");
        assert_eq!(UserId::for_name(&a), UserId::for_name(&b));
        assert_eq!(
            UserName::parse("al"),
            Err(NameError::Length { min: 3, max: 32 })
        );
        assert!(matches!(
            UserName::parse(&"a".repeat(33)),
            Err(NameError::Length { .. })
        ));
        assert_eq!(UserName::parse("9lives"), Err(NameError::Characters));
        assert_eq!(UserName::parse("al ice"), Err(NameError::Characters));
        assert_eq!(UserName::parse("alïce"), Err(NameError::Characters));
    }

    #[test]
    fn display_names_refuse_blank_and_overlong() {
        assert_eq!(DisplayName::parse("  Bob  ").unwrap().as_str(), "Bob");
        assert_eq!(DisplayName::parse("   "), Err(NameError::Blank));
        assert_eq!(DisplayName::parse("a\nb"), Err(NameError::Blank));
        assert!(DisplayName::parse(&"x".repeat(65)).is_err());
        assert!(DisplayName::parse(&"é".repeat(64)).is_ok());
    }

    #[test]
    fn handles_fold_case_where_the_network_does() {
        let jid = Handle::parse(Protocol::Xmpp, "Bob@LocalHost").unwrap();
        assert_eq!(jid.as_str(), "bob@localhost");
        assert!(Handle::parse(Protocol::Xmpp, "a b").is_err());
    }

    #[test]
    fn irc_nicks_fold_ascii_letters_only_and_keep_their_form() {
        // Servers differ in case mapping (rfc1459 folds []\\~ too, ngIRCd's "ascii" does
        // not): the stored nick folds letters only; the connector compares the server's way.
        let nick = |s| Handle::parse(Protocol::Irc, s).map(|h| h.as_str().to_owned());
        assert_eq!(nick("Bob[away]").unwrap(), "bob[away]");
        assert_ne!(nick("BOB{AWAY}"), nick("bob[away]"));
        assert_eq!(nick("_dave-2").unwrap(), "_dave-2");
        for bad in [
            "#channel",
            "2fast",
            "-x",
            "a,b",
            "a!b",
            "nick@host",
            &"n".repeat(33),
        ] {
            assert!(nick(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn nostr_keys_are_stored_as_lower_case_hex() {
        // The pair from NIP-19.
        let hex = "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e";
        let npub = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg";
        let key = |s: &str| Handle::parse(Protocol::Nostr, s).map(|h| h.as_str().to_owned());
        assert_eq!(key(npub).unwrap(), hex);
        assert_eq!(key(&format!("nostr:{npub}")).unwrap(), hex);
        assert_eq!(key(&npub.to_uppercase()).unwrap(), hex);
        assert_eq!(key(&hex.to_uppercase()).unwrap(), hex);
        let broken = format!("{}q", &npub[..npub.len() - 1]);
        for bad in [
            &broken[..],
            "npub1",
            "nsec1xyz",
            &hex[1..],
            "bob@example.org",
        ] {
            assert!(key(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn matrix_ids_are_full_user_ids() {
        let id = |s| Handle::parse(Protocol::Matrix, s).map(|h| h.as_str().to_owned());
        assert_eq!(id("@Alice:LocalHost").unwrap(), "@alice:localhost");
        assert_eq!(
            id("@bob.b-2=x:example.org:8448").unwrap(),
            "@bob.b-2=x:example.org:8448"
        );
        for bad in [
            "alice",
            "@alice",
            "@:localhost",
            "#room:localhost",
            "@a b:x",
            "@a:",
        ] {
            assert!(id(bad).is_err(), "{bad} accepted");
        }
    }
}
