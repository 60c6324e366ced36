//! A batch of history rows as one `COPY history_view FROM STDIN` (text format): PostgreSQL
//! parses plain text rows instead of eleven parameter arrays, and no JSON array per row has to
//! be unpacked into a uuid array.

use std::io::Write as _;

use sqlx::PgConnection;
use uuid::Uuid;

use super::{involved, public_details_text, summary};
use crate::store::event_store::StoredEvent;

/// Writes one row per event. Each position is written once: the runner's checkpoint, read and
/// written in the same transaction, guarantees it; a second row for one position would fail the
/// batch on the primary key rather than pass unnoticed.
pub(super) async fn copy_rows(
    conn: &mut PgConnection,
    events: &[StoredEvent],
) -> Result<(), sqlx::Error> {
    let mut data = Vec::with_capacity(events.len() * 512);
    for event in events {
        push_row(&mut data, event);
    }
    let mut copy = conn
        .copy_in_raw(
            "COPY history_view (position, user_id, sequence, kind, summary, actor, request_id, \
               recorded_at, contact_ids, meta_contact_ids, details) FROM STDIN",
        )
        .await?;
    copy.send(data).await?;
    copy.finish().await?;
    Ok(())
}

/// One row in COPY's text format: tab-separated, `\N` for NULL, backslash escapes.
fn push_row(out: &mut Vec<u8>, event: &StoredEvent) {
    let (contacts, metas) = involved(&event.event);
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "{}\t{}\t{}\t",
        event.position, event.user_id.0, event.sequence
    );
    push_text(out, event.event.kind());
    out.push(b'\t');
    push_text(out, &summary(&event.event));
    out.push(b'\t');
    push_text(out, &event.actor);
    out.push(b'\t');
    match &event.request_id {
        Some(id) => push_text(out, id),
        None => out.extend_from_slice(b"\\N"),
    }
    out.push(b'\t');
    push_text(
        out,
        &event
            .recorded_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    );
    out.push(b'\t');
    push_uuids(out, &contacts);
    out.push(b'\t');
    push_uuids(out, &metas);
    out.push(b'\t');
    push_text(out, &public_details_text(&event.event));
    out.push(b'\n');
}

/// A text value with COPY's escapes for the characters that delimit rows and columns; the runs
/// between them are copied whole.
fn push_text(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// A uuid array literal: `{a,b}`; uuids need no quoting.
fn push_uuids(out: &mut Vec<u8>, ids: &[Uuid]) {
    out.push(b'{');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "{id}");
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::push_text;

    #[test]
    fn delimiters_and_backslashes_are_escaped() {
        let mut out = Vec::new();
        push_text(&mut out, "a\tb\nc\rd\\e \"f\" ü");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\tb\\nc\\rd\\\\e \"f\" ü"
        );
    }
}
