//! `chat-server export`: a room's stored history on stdout, as text or JSON lines.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use chat_protocol::v2::ChatMessage;
use rusqlite::params;

use super::files::{create_private_dir, database_error, open_existing};
use super::{AdminError, capture_state};
use crate::cli::ExportFormat;
use crate::config::Config;

/// Writes the history of the room named `room`, oldest message first; the number written.
pub fn export(
    config: &Config,
    room: &str,
    format: ExportFormat,
    out: &mut impl Write,
) -> Result<u64, AdminError> {
    let scratch = std::env::temp_dir().join(format!(
        "chat-server-export-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos())
    ));
    create_private_dir(&scratch)?;
    let state = capture_state(&config.state, &scratch);
    let _ = fs::remove_dir_all(&scratch);
    let state = state?;
    let Some(found) = state.rooms.iter().find(|r| r.name == room) else {
        return Err(AdminError::Refused(format!(
            "there is no room named \"{}\" in {}",
            room.escape_debug(),
            config.state.display()
        )));
    };
    let history = open_existing(&config.history, false)?;
    let failed = |source| database_error(&config.history, source);
    // A database the server has not opened since actions and direct messages came has no
    // columns for them, and none of either.
    let columns: Vec<String> = history
        .prepare("SELECT name FROM pragma_table_info('messages')")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(failed)?;
    let has = |column: &str| columns.iter().any(|name| name == column);
    let me = if has("me") { "me" } else { "0" };
    let recipient = if has("recipient") {
        "recipient"
    } else {
        "NULL"
    };
    let mut query = history
        .prepare(&format!(
            "SELECT id, sender, text, ts, {me}, {recipient} FROM messages \
             WHERE room_uid = ?1 ORDER BY id"
        ))
        .map_err(failed)?;
    // Stored bit-for-bit as SQLite's signed integers.
    let mut rows = query.query(params![found.uid as i64]).map_err(failed)?;
    let mut written = 0;
    let write_failed = |source| AdminError::Io {
        what: "cannot write the export of",
        path: PathBuf::from(room),
        source,
    };
    while let Some(row) = rows.next().map_err(failed)? {
        let message = ChatMessage {
            id: row.get::<_, i64>(0).map_err(failed)? as u64,
            from: row.get(1).map_err(failed)?,
            text: row.get(2).map_err(failed)?,
            ts: row.get::<_, i64>(3).map_err(failed)? as u64,
            me: row.get::<_, i64>(4).map_err(failed)? != 0,
            to: row.get(5).map_err(failed)?,
        };
        let line = match format {
            ExportFormat::Jsonl => {
                serde_json::to_writer(&mut *out, &message).map_err(io::Error::from)
            }
            ExportFormat::Text => write!(out, "{}", text_line(&message)),
        }
        .and_then(|()| out.write_all(b"\n"));
        match line {
            Ok(()) => written += 1,
            // The reader stopped (`export ROOM | head`): that is the end, not a failure.
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => return Ok(written),
            Err(error) => return Err(write_failed(error)),
        }
    }
    match out.flush() {
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => Err(write_failed(error)),
        _ => Ok(written),
    }
}

/// `2026-12-01T10:00:00.000Z <alice> hello` (an action: `* alice waves`; a direct message:
/// `<alice> (to bob) see you`), with control characters escaped so that one message is one
/// line and nobody's text can drive the reader's terminal.
pub fn text_line(message: &ChatMessage) -> String {
    let time = i64::try_from(message.ts)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("@{}ms", message.ts),
            |time| time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        );
    let (from, text) = (
        escape_controls(&message.from),
        escape_controls(&message.text),
    );
    match (&message.to, message.me) {
        (_, true) => format!("{time} * {from} {text}"),
        (Some(to), false) => format!("{time} <{from}> (to {}) {text}", escape_controls(to)),
        (None, false) => format!("{time} <{from}> {text}"),
    }
}

fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || c == '\\' {
            escaped.extend(c.escape_debug());
        } else {
            escaped.push(c);
        }
    }
    escaped
}
