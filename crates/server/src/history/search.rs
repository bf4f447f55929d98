//! Full-text search over the history with SQLite's FTS5: a contentless index of every
//! message's text (`message_search`), kept current by triggers on `messages`, so that stores,
//! trims and deletes (and the admin's restore) maintain it without anyone remembering to.
//!
//! An index row's rowid is the message's id plus its room's number times 2^40, the number
//! coming from `search_rooms` (one small row per room), so that a message costs one index
//! insert and nothing else, and a room's messages are one rowid range to search in.

use rusqlite::{Connection, OptionalExtension, params};

use super::{HistoryError, HistoryStore, StoredMessage, to_sql};

/// Where a room's rowids start: room number n owns `[n << 40, (n + 1) << 40)`.
const ROOM_SPAN: i64 = 1 << 40;

/// Creates the index and its triggers if missing, and fills it from a database made before
/// it existed. (No statement in a trigger may rely on its own conflict clause: the store's
/// `INSERT OR REPLACE` overrides them all, which is why the room's number is added only when
/// missing rather than with `INSERT OR IGNORE`.)
pub(super) fn prepare(connection: &Connection) -> Result<(), rusqlite::Error> {
    let exists: bool = connection.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'message_search'",
        [],
        |row| row.get(0),
    )?;
    if exists {
        return Ok(());
    }
    connection.execute_batch(
        "BEGIN;
         CREATE TABLE search_rooms (
             n        INTEGER PRIMARY KEY,
             room_uid INTEGER NOT NULL UNIQUE
         );
         CREATE VIRTUAL TABLE message_search USING fts5(text, content='', contentless_delete=1);
         INSERT INTO search_rooms (room_uid) SELECT DISTINCT room_uid FROM messages;
         INSERT INTO message_search (rowid, text)
             SELECT r.n * 1099511627776 + m.id, m.text FROM messages m
             JOIN search_rooms r ON r.room_uid = m.room_uid;
         CREATE TRIGGER messages_indexed AFTER INSERT ON messages BEGIN
             INSERT INTO search_rooms (room_uid) SELECT new.room_uid
                 WHERE NOT EXISTS (SELECT 1 FROM search_rooms WHERE room_uid = new.room_uid);
             INSERT OR REPLACE INTO message_search (rowid, text) VALUES (
                 (SELECT n FROM search_rooms WHERE room_uid = new.room_uid) * 1099511627776
                     + new.id,
                 new.text);
         END;
         CREATE TRIGGER messages_unindexed AFTER DELETE ON messages BEGIN
             DELETE FROM message_search WHERE rowid =
                 (SELECT n FROM search_rooms WHERE room_uid = old.room_uid) * 1099511627776
                     + old.id;
         END;
         COMMIT;",
    )
}

/// Forgets a closed room's number (its messages, and so their index rows, are gone).
pub(super) fn forget_room(connection: &Connection, room_uid: u64) -> Result<(), rusqlite::Error> {
    connection.execute(
        "DELETE FROM search_rooms WHERE room_uid = ?1",
        params![to_sql(room_uid)],
    )?;
    Ok(())
}

/// The words as an FTS5 query: each one a quoted phrase (so that no character the user types
/// is query syntax), all of them required.
pub fn fts_query(words: &str) -> String {
    words
        .split_whitespace()
        .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

impl HistoryStore {
    /// The newest messages of a room before `before` (all when None) that contain every one of
    /// `words` (as FTS5's default tokenizer sees words: any case, accents ignored), as the
    /// member with stable id `reader` may read them; oldest first, at most `limit`, and
    /// whether older matches remain.
    pub fn search(
        &self,
        room_uid: u64,
        words: &str,
        before: Option<u64>,
        limit: usize,
        reader: u64,
    ) -> Result<(Vec<StoredMessage>, bool), HistoryError> {
        let query = fts_query(words);
        if query.is_empty() {
            return Ok((Vec::new(), false));
        }
        let room: Option<i64> = self
            .connection
            .query_row(
                "SELECT n FROM search_rooms WHERE room_uid = ?1",
                params![to_sql(room_uid)],
                |row| row.get(0),
            )
            .optional()?;
        let Some(room) = room else {
            return Ok((Vec::new(), false));
        };
        let first = room.saturating_mul(ROOM_SPAN);
        let end = before.map_or(i64::MAX, to_sql).clamp(0, ROOM_SPAN);
        let mut newest_first = self.query(
            "SELECT m.room_uid, m.id, m.member_uid, m.seq, m.sender, m.text, m.ts, m.me,
                    m.recipient, m.recipient_uid
             FROM message_search s
             JOIN messages m ON m.room_uid = ?2 AND m.id = s.rowid - ?3
             WHERE message_search MATCH ?1 AND s.rowid >= ?3 AND s.rowid < ?3 + ?4
               AND (m.recipient_uid IS NULL OR m.recipient_uid = ?6 OR m.member_uid = ?6)
             ORDER BY s.rowid DESC LIMIT ?5",
            params![
                query,
                to_sql(room_uid),
                first,
                end,
                limit as i64 + 1,
                to_sql(reader)
            ],
        )?;
        let more = newest_first.len() > limit;
        newest_first.truncate(limit);
        newest_first.reverse();
        Ok((newest_first, more))
    }
}

#[cfg(test)]
mod tests {
    use chat_protocol::v2::ChatMessage;

    use super::*;

    fn message(room_uid: u64, id: u64, text: &str) -> StoredMessage {
        StoredMessage {
            room_uid,
            member_uid: 7,
            seq: Some(id),
            recipient_uid: None,
            message: ChatMessage {
                id,
                from: "alice".into(),
                text: text.into(),
                ts: id,
                me: false,
                to: None,
            },
        }
    }

    fn ids(found: &(Vec<StoredMessage>, bool)) -> Vec<u64> {
        found.0.iter().map(|m| m.message.id).collect()
    }

    #[test]
    fn words_are_quoted_so_nothing_typed_is_syntax() {
        assert_eq!(fts_query("cake  fridge"), "\"cake\" \"fridge\"");
        assert_eq!(fts_query("a\"b OR c*"), "\"a\"\"b\" \"OR\" \"c*\"");
        assert_eq!(fts_query("   "), "");
    }

    #[test]
    fn finds_every_word_in_one_room_newest_first_paged_and_forgets_what_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = HistoryStore::open(&dir.path().join("h.db")).unwrap();
        let batch = [
            message(1, 1, "The cake is in the fridge"),
            message(1, 2, "no cake today"),
            message(1, 3, "CAKE in the FRIDGE again"),
            message(2, 1, "cake fridge in another room"),
            message(1, 4, "crème brûlée"),
        ];
        store.store(&batch, 100).unwrap();
        assert_eq!(
            ids(&store.search(1, "fridge cake", None, 10, 9).unwrap()),
            [1, 3]
        );
        let page = store.search(1, "cake", None, 2, 9).unwrap();
        assert_eq!((ids(&page), page.1), (vec![2, 3], true));
        assert_eq!(ids(&store.search(1, "cake", Some(2), 2, 9).unwrap()), [1]);
        assert_eq!(ids(&store.search(1, "creme", None, 10, 9).unwrap()), [4]);
        assert_eq!(
            ids(&store.search(1, "\"OR*", None, 10, 9).unwrap()),
            Vec::<u64>::new()
        );
        // Trimmed to the newest two: the older matches are gone from the index too.
        store.store(&[message(1, 5, "last cake")], 2).unwrap();
        assert_eq!(ids(&store.search(1, "cake", None, 10, 9).unwrap()), [5]);
        store.delete_room(2).unwrap();
        assert_eq!(
            ids(&store.search(2, "cake", None, 10, 9).unwrap()),
            Vec::<u64>::new()
        );
        // Stored again (as a restore may): replaced, not found twice or under the old text.
        store.store(&[message(1, 5, "last pie")], 100).unwrap();
        assert_eq!(
            ids(&store.search(1, "cake", None, 10, 9).unwrap()),
            Vec::<u64>::new()
        );
        assert_eq!(ids(&store.search(1, "pie", None, 10, 9).unwrap()), [5]);
        // A room made after another closed gets a number of its own.
        store.store(&[message(3, 1, "new room cake")], 100).unwrap();
        assert_eq!(ids(&store.search(3, "cake", None, 10, 9).unwrap()), [1]);
        assert_eq!(
            ids(&store.search(1, "room", None, 10, 9).unwrap()),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn direct_messages_are_found_only_by_their_two_members() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = HistoryStore::open(&dir.path().join("h.db")).unwrap();
        let mut direct = message(1, 2, "secret cake");
        direct.recipient_uid = Some(8);
        store
            .store(&[message(1, 1, "public cake"), direct], 100)
            .unwrap();
        assert_eq!(ids(&store.search(1, "cake", None, 10, 7).unwrap()), [1, 2]);
        assert_eq!(ids(&store.search(1, "cake", None, 10, 8).unwrap()), [1, 2]);
        assert_eq!(ids(&store.search(1, "cake", None, 10, 9).unwrap()), [1]);
    }

    #[test]
    fn a_database_from_before_search_is_indexed_on_opening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE messages (
                 room_uid INTEGER NOT NULL, id INTEGER NOT NULL, member_uid INTEGER NOT NULL,
                 seq INTEGER, sender TEXT NOT NULL, text TEXT NOT NULL, ts INTEGER NOT NULL,
                 PRIMARY KEY (room_uid, id)
             ) WITHOUT ROWID;
             INSERT INTO messages VALUES (1, 1, 7, 1, 'alice', 'an old cake', 5);",
        )
        .unwrap();
        drop(old);
        let store = HistoryStore::open(&path).unwrap();
        assert_eq!(ids(&store.search(1, "cake", None, 10, 9).unwrap()), [1]);
    }
}
