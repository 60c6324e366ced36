//! IRC wire format: parsing server lines, case mapping, RPL_ISUPPORT, and cutting outgoing text
//! into lines that fit the protocol's 512-byte limit.

use base64::Engine as _;

/// Bytes in a line, CR LF included (RFC 1459 §2.3); IRCv3 tags come on top, we request none.
pub(super) const MAX_LINE: usize = 512;
/// Longest line accepted from the server (tags may add 8 KiB); longer ones are dropped whole.
pub(super) const MAX_INCOMING: usize = 8192 + MAX_LINE;
/// Bytes of base64 per AUTHENTICATE line (IRCv3 SASL 3.1).
const SASL_CHUNK: usize = 400;

/// One line from the server: `[@tags] [:source] COMMAND params... [:trailing]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    pub source: Option<String>,
    /// Upper case; numerics stay three digits.
    pub command: String,
    pub params: Vec<String>,
}

impl Line {
    /// Parses one line without its CR LF; `None` for an empty or command-less line.
    pub fn parse(raw: &str) -> Option<Line> {
        let mut rest = raw.trim_end_matches(['\r', '\n']);
        if let Some(tagged) = rest.strip_prefix('@') {
            rest = tagged.split_once(' ')?.1;
        }
        rest = rest.trim_start_matches(' ');
        let source = match rest.strip_prefix(':') {
            Some(prefixed) => {
                let (source, after) = prefixed.split_once(' ')?;
                rest = after;
                Some(source.to_owned())
            }
            None => None,
        };
        rest = rest.trim_start_matches(' ');
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if command.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(trailing) = rest.strip_prefix(':') {
                params.push(trailing.to_owned());
                break;
            }
            let (param, after) = rest.split_once(' ').unwrap_or((rest, ""));
            params.push(param.to_owned());
            rest = after;
        }
        Some(Line {
            source,
            command: command.to_ascii_uppercase(),
            params,
        })
    }

    /// The `i`th parameter, or "" when there are fewer.
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map_or("", String::as_str)
    }

    /// The last parameter (the human-readable text of most numerics), or "".
    pub fn text(&self) -> &str {
        self.params.last().map_or("", String::as_str)
    }

    /// The nick of a user source (`nick!user@host`); `None` for servers and missing sources.
    pub fn source_nick(&self) -> Option<&str> {
        let source = self.source.as_deref()?;
        let (nick, _) = source.split_once('!')?;
        Some(nick).filter(|nick| !nick.is_empty())
    }
}

/// How the server compares nicks (RPL_ISUPPORT `CASEMAPPING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum CaseMapping {
    Ascii,
    /// RFC 1459: `[]\~` are the upper case of `{}|^`. The default when the server says nothing.
    #[default]
    Rfc1459,
    /// As RFC 1459 without `~`/`^`.
    StrictRfc1459,
}

impl CaseMapping {
    fn parse(value: &str) -> Self {
        match value.to_ascii_lowercase().as_str() {
            "ascii" => Self::Ascii,
            "strict-rfc1459" => Self::StrictRfc1459,
            _ => Self::Rfc1459,
        }
    }

    /// The form two nicks are equal in.
    pub fn fold(self, nick: &str) -> String {
        nick.chars()
            .map(|c| match (self, c) {
                (Self::Rfc1459 | Self::StrictRfc1459, '[') => '{',
                (Self::Rfc1459 | Self::StrictRfc1459, ']') => '}',
                (Self::Rfc1459 | Self::StrictRfc1459, '\\') => '|',
                (Self::Rfc1459, '~') => '^',
                _ => c.to_ascii_lowercase(),
            })
            .collect()
    }
}

/// What RPL_ISUPPORT (005) told us, as far as the connector cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Isupport {
    pub casemapping: CaseMapping,
    /// `MONITOR` support and its list limit (`None` inside: no limit given).
    pub monitor: Option<Option<usize>>,
    pub nicklen: usize,
}

impl Default for Isupport {
    fn default() -> Self {
        Self {
            casemapping: CaseMapping::default(),
            monitor: None,
            // RFC 1459's limit: what a server that says nothing can be assumed to take.
            nicklen: 9,
        }
    }
}

impl Isupport {
    /// Applies the tokens of one 005 line (`<me> TOKEN[=value]... :are supported`).
    pub fn apply(&mut self, line: &Line) {
        let tokens = line.params.iter().skip(1);
        let count = line.params.len().saturating_sub(2);
        for token in tokens.take(count) {
            let (key, value) = token.split_once('=').unwrap_or((token, ""));
            match key.to_ascii_uppercase().as_str() {
                "CASEMAPPING" => self.casemapping = CaseMapping::parse(value),
                "MONITOR" => self.monitor = Some(value.parse().ok().filter(|limit| *limit > 0)),
                "-MONITOR" => self.monitor = None,
                "NICKLEN" => {
                    if let Ok(len) = value.parse::<usize>() {
                        self.nicklen = len.max(1);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Whether `nick` is a syntactically valid IRC nick (RFC 2812 §2.3.1, any length).
pub(super) fn valid_nick(nick: &str) -> bool {
    let special = |c: char| matches!(c, '[' | ']' | '\\' | '`' | '_' | '^' | '{' | '|' | '}');
    let mut chars = nick.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || special(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || special(c) || c == '-')
}

/// The `attempt`th (from 1) stand-in for `nick` while another connection holds it:
/// `nick_`, `nick_2`, `nick_3`…, cut to `limit` bytes.
pub(super) fn alternative_nick(nick: &str, attempt: usize, limit: usize) -> String {
    let suffix = if attempt <= 1 {
        "_".to_owned()
    } else {
        format!("_{attempt}")
    };
    let keep = limit.saturating_sub(suffix.len()).clamp(1, nick.len());
    format!("{}{suffix}", &nick[..keep])
}

/// The `CAP LS` capability list as (name, value) pairs.
pub(super) fn capabilities(list: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    list.split(' ')
        .filter(|cap| !cap.is_empty())
        .map(|cap| match cap.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (cap, None),
        })
}

/// Whether `name` is in the `CAP LS` list.
pub(super) fn cap_offered(list: &str, name: &str) -> bool {
    capabilities(list).any(|(cap, _)| cap.eq_ignore_ascii_case(name))
}

/// The nicks in an RPL_USERHOST (302) reply (`nick[*]=+user@host`, `-` for away), with whether
/// each is away.
pub(super) fn userhost_reply(text: &str) -> Vec<(&str, bool)> {
    text.split(' ')
        .filter_map(|reply| {
            let (nick, rest) = reply.split_once('=')?;
            let nick = nick.strip_suffix('*').unwrap_or(nick);
            Some((nick, rest.starts_with('-'))).filter(|(nick, _)| !nick.is_empty())
        })
        .collect()
}

/// Whether the offered `sasl` capability (value: mechanism list, if any) allows PLAIN.
pub(super) fn sasl_plain_offered(list: &str) -> bool {
    capabilities(list).any(|(name, value)| {
        name.eq_ignore_ascii_case("sasl")
            && value.is_none_or(|mechs| mechs.split(',').any(|m| m.eq_ignore_ascii_case("PLAIN")))
    })
}

/// The AUTHENTICATE payloads of a SASL PLAIN login, 400 bytes each, with the closing `+`
/// when the last one is full (IRCv3 SASL 3.1). They hold the password: never log them.
pub(super) fn sasl_plain_payloads(account: &str, password: &str) -> Vec<String> {
    let message = format!("{account}\0{account}\0{password}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(message.as_bytes());
    let mut payloads: Vec<String> = encoded
        .as_bytes()
        .chunks(SASL_CHUNK)
        // Base64 is ASCII, so any cut is a char boundary.
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect();
    if payloads.last().is_none_or(|last| last.len() == SASL_CHUNK) {
        payloads.push("+".to_owned());
    }
    payloads
}

/// Cuts a message body into texts for one PRIVMSG each: one per line of the body (CR, LF and
/// CR LF all end a line; empty lines are skipped, NUL bytes dropped), and lines longer than
/// `max_bytes` cut at the last space before the limit, or at a character boundary.
pub(super) fn split_body(body: &str, max_bytes: usize) -> Vec<String> {
    let max_bytes = max_bytes.max(4); // room for any one UTF-8 character
    let mut texts = Vec::new();
    for line in body.split(['\r', '\n']) {
        let mut rest: String = line.chars().filter(|c| *c != '\0').collect();
        while rest.len() > max_bytes {
            let mut cut = max_bytes;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let at = match rest[..cut].rfind(' ') {
                Some(space) if space > 0 => space,
                _ => cut,
            };
            let tail = rest.split_off(at);
            texts.push(rest);
            rest = tail.strip_prefix(' ').map(str::to_owned).unwrap_or(tail);
        }
        if !rest.trim().is_empty() {
            texts.push(rest);
        }
    }
    texts
}

/// Decodes a line from the server: UTF-8 when it is, else Latin-1 (older clients' default).
pub(super) fn decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_and_without_source_and_trailing() {
        let line = Line::parse(":ann!a@127.0.0.1 PRIVMSG ben :hello there\r\n").unwrap();
        assert_eq!(line.source_nick(), Some("ann"));
        assert_eq!(line.command, "PRIVMSG");
        assert_eq!(line.params, ["ben", "hello there"]);
        let ping = Line::parse("ping :abc").unwrap();
        assert_eq!(
            (ping.source.as_deref(), ping.command.as_str()),
            (None, "PING")
        );
        assert_eq!(ping.text(), "abc");
        let numeric = Line::parse(":irc.localhost 303 ann :ben  cid").unwrap();
        assert_eq!(numeric.source_nick(), None);
        assert_eq!(numeric.params, ["ann", "ben  cid"]);
        let tagged = Line::parse("@time=x :s 730 me :a!b@c,d!e@f").unwrap();
        assert_eq!(tagged.command, "730");
        assert_eq!(tagged.param(1), "a!b@c,d!e@f");
        assert_eq!(tagged.param(5), "");
        let empty_trailing = Line::parse("AUTHENTICATE :+").unwrap();
        assert_eq!(empty_trailing.params, ["+"]);
        assert_eq!(Line::parse(""), None);
        assert_eq!(Line::parse(":only-a-source"), None);
    }

    #[test]
    fn nicks_fold_by_the_servers_case_mapping() {
        assert_eq!(CaseMapping::Rfc1459.fold("Ann[x]~\\"), "ann{x}^|");
        assert_eq!(CaseMapping::StrictRfc1459.fold("A[~"), "a{~");
        assert_eq!(CaseMapping::Ascii.fold("A[~"), "a[~");
    }

    #[test]
    fn isupport_reads_monitor_casemapping_and_nicklen() {
        let mut isupport = Isupport::default();
        assert_eq!(isupport.monitor, None);
        isupport.apply(
            &Line::parse(":s 005 me MONITOR=30 CASEMAPPING=ascii NICKLEN=31 :are supported")
                .unwrap(),
        );
        assert_eq!(isupport.monitor, Some(Some(30)));
        assert_eq!(isupport.casemapping, CaseMapping::Ascii);
        assert_eq!(isupport.nicklen, 31);
        isupport.apply(&Line::parse(":s 005 me MONITOR :are supported").unwrap());
        assert_eq!(isupport.monitor, Some(None));
    }

    #[test]
    fn nicks_are_validated() {
        for ok in ["ann", "A-1", "[bot]", "_x", "a`b^c|d{e}"] {
            assert!(valid_nick(ok), "{ok}");
        }
        for bad in ["", "1ann", "-a", "a b", "a!b", "a@b", "a:b", "#chan", "é"] {
            assert!(!valid_nick(bad), "{bad}");
        }
    }

    #[test]
    fn alternative_nicks_fit_the_limit() {
        assert_eq!(alternative_nick("ann", 1, 30), "ann_");
        assert_eq!(alternative_nick("ann", 2, 30), "ann_2");
        assert_eq!(alternative_nick("abcdefghi", 1, 9), "abcdefgh_");
        assert_eq!(alternative_nick("abcdefghi", 3, 9), "abcdefg_3");
    }

    #[test]
    fn sasl_plain_needs_plain_or_an_unspecified_list() {
        assert!(sasl_plain_offered("away-notify sasl=PLAIN,EXTERNAL"));
        assert!(sasl_plain_offered("sasl multi-prefix"));
        assert!(!sasl_plain_offered("sasl=EXTERNAL"));
        assert!(!sasl_plain_offered("multi-prefix"));
    }

    #[test]
    fn userhost_replies_say_who_is_away() {
        assert_eq!(
            userhost_reply("ann=+a@127.0.0.1 Ben*=-b@host "),
            [("ann", false), ("Ben", true)]
        );
        assert!(userhost_reply("").is_empty());
        assert!(cap_offered("sasl=PLAIN away-notify", "AWAY-NOTIFY"));
        assert!(!cap_offered("sasl=PLAIN", "away-notify"));
    }

    #[test]
    fn sasl_payloads_are_chunked_and_closed() {
        let payloads = sasl_plain_payloads("ann", "pw");
        assert_eq!(payloads, ["YW5uAGFubgBwdw=="]);
        // 300 bytes of message: exactly 400 bytes of base64, so a "+" follows.
        let long = sasl_plain_payloads("ab", &"x".repeat(300 - 6));
        assert_eq!(long.len(), 2);
        assert_eq!((long[0].len(), long[1].as_str()), (400, "+"));
        let longer = sasl_plain_payloads("ab", &"x".repeat(400));
        assert_eq!(longer.len(), 2);
        assert!(longer[1].len() < 400 && longer[1] != "+");
    }

    #[test]
    fn bodies_split_on_newlines_and_length() {
        assert_eq!(
            split_body("one\r\ntwo\n\nthree\r", 100),
            ["one", "two", "three"]
        );
        assert_eq!(split_body("a\0b", 100), ["ab"]);
        assert!(split_body(" \n\r\n", 100).is_empty());
        assert_eq!(split_body("hello big world", 10), ["hello big", "world"]);
        let cut = split_body(&"é".repeat(10), 5);
        assert!(cut.iter().all(|part| part.len() <= 5), "{cut:?}");
        assert_eq!(cut.concat(), "é".repeat(10));
    }

    #[test]
    fn non_utf8_lines_decode_as_latin1() {
        assert_eq!(decode(b"caf\xe9"), "café");
        assert_eq!(decode("café".as_bytes()), "café");
    }
}
