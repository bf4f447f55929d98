//! Full-text search over the history with SQLite's FTS5: a contentless index of the
//! messages' text (`message_search`), brought up to date in batches, off the commit path: when
//! the history thread has been idle a moment, and for a room right before it is searched. A
//! commit of one message therefore costs what it did (indexing it there cost FTS5 a new
//! segment per commit, several times the insert itself).
//!
//! An index row's rowid is the message's id plus its room's number times 2^40 (the number
//! from `search_rooms`, one small row per room that also keeps how far the room is indexed
//! and purged), so a room's messages are one rowid range. Messages trimmed or forgotten since
//! the last catch-up are purged from the index then; until then the join with `messages`
//! leaves them out of results. (A message stored again under an id already indexed, which
//! the server never does, would keep its first text in the index.)

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension, params};

use super::{HistoryError, HistoryStore, StoredMessage, to_sql};

/// Where a room's rowids start: room number n owns `[n << 40, (n + 1) << 40)`.
const ROOM_SPAN: i64 = 1 << 40;

/// Creates the index if missing (a database made before it gets it empty; catching up fills
/// it). Drops the triggers an earlier build of this feature indexed with.
pub(super) fn prepare(connection: &Connection) -> Result<(), rusqlite::Error> {
    connection.execute_batch(
        "DROP TRIGGER IF EXISTS messages_indexed;
         DROP TRIGGER IF EXISTS messages_unindexed;
         DROP TABLE IF EXISTS search_keys;
         CREATE TABLE IF NOT EXISTS search_rooms (
             n              INTEGER PRIMARY KEY,
             room_uid       INTEGER NOT NULL UNIQUE,
             indexed_upto   INTEGER NOT NULL DEFAULT 0,
             purged_below   INTEGER NOT NULL DEFAULT 0
         );
         CREATE VIRTUAL TABLE IF NOT EXISTS message_search
             USING fts5(text, content='', contentless_delete=1);",
    )
}

/// Rooms whose messages changed since they were last indexed, kept by the store.
#[derive(Debug, Default)]
pub(super) struct Unindexed {
    rooms: BTreeSet<u64>,
    /// Messages stored since the last catch-up, to catch up early under steady load.
    messages: usize,
}

/// Messages stored without a pause before the index catches up anyway.
pub const INDEX_BACKLOG: usize = 4096;

impl Unindexed {
    pub(super) fn stored(&mut self, room_uid: u64) {
        self.rooms.insert(room_uid);
        self.messages += 1;
    }
}

impl HistoryStore {
    /// Whether messages wait to be indexed, and whether enough of them that the index should
    /// catch up even though stores keep coming.
    pub fn index_pending(&self) -> (bool, bool) {
        let pending = &self.unindexed;
        (!pending.rooms.is_empty(), pending.messages >= INDEX_BACKLOG)
    }

    /// Indexes every room stored since the last time, in one transaction.
    pub fn catch_up_index(&mut self) -> Result<(), HistoryError> {
        let rooms = std::mem::take(&mut self.unindexed);
        let transaction = self.connection.transaction()?;
        for &room_uid in &rooms.rooms {
            catch_up_room(&transaction, room_uid)?;
        }
        transaction.commit()?;
        Ok(())
    }

    /// Forgets a closed room's index rows and number.
    pub(super) fn forget_indexed_room(&mut self, room_uid: u64) -> Result<(), HistoryError> {
        self.unindexed.rooms.remove(&room_uid);
        let number: Option<i64> = self
            .connection
            .query_row(
                "SELECT n FROM search_rooms WHERE room_uid = ?1",
                params![to_sql(room_uid)],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(number) = number {
            let first = number.saturating_mul(ROOM_SPAN);
            self.connection.execute(
                "DELETE FROM message_search WHERE rowid >= ?1 AND rowid < ?1 + ?2",
                params![first, ROOM_SPAN],
            )?;
            self.connection
                .execute("DELETE FROM search_rooms WHERE n = ?1", params![number])?;
        }
        Ok(())
    }
}

/// Brings one room's index up to date: purges what was trimmed, adds what is new. Returns the
/// room's number.
fn catch_up_room(connection: &Connection, room_uid: u64) -> Result<i64, rusqlite::Error> {
    let room = to_sql(room_uid);
    connection.execute(
        "INSERT INTO search_rooms (room_uid) SELECT ?1
             WHERE NOT EXISTS (SELECT 1 FROM search_rooms WHERE room_uid = ?1)",
        params![room],
    )?;
    let (number, indexed_upto, purged_below): (i64, i64, i64) = connection.query_row(
        "SELECT n, indexed_upto, purged_below FROM search_rooms WHERE room_uid = ?1",
        params![room],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    let first = number.saturating_mul(ROOM_SPAN);
    let oldest: Option<i64> = connection.query_row(
        "SELECT min(id) FROM messages WHERE room_uid = ?1",
        params![room],
        |row| row.get(0),
    )?;
    // Everything below the oldest stored message is gone (trimmed, or a pair room's ended
    // conversation); with none stored, everything indexed is.
    let gone_below = oldest
        .unwrap_or(indexed_upto.saturating_add(1))
        .min(ROOM_SPAN);
    if gone_below > purged_below {
        connection.execute(
            "DELETE FROM message_search WHERE rowid >= ?1 + ?2 AND rowid < ?1 + ?3",
            params![first, purged_below, gone_below],
        )?;
    }
    connection.execute(
        "INSERT INTO message_search (rowid, text)
             SELECT ?2 + id, text FROM messages WHERE room_uid = ?1 AND id > ?3 AND id < ?4",
        params![room, first, indexed_upto, ROOM_SPAN],
    )?;
    let newest: Option<i64> = connection.query_row(
        "SELECT max(id) FROM messages WHERE room_uid = ?1",
        params![room],
        |row| row.get(0),
    )?;
    connection.execute(
        "UPDATE search_rooms SET indexed_upto = ?2, purged_below = ?3 WHERE n = ?1",
        params![
            number,
            newest.unwrap_or(indexed_upto).max(indexed_upto),
            gone_below.max(purged_below)
        ],
    )?;
    Ok(number)
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
        &mut self,
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
        // The room's index is caught up first, so that nothing stored is missed.
        self.unindexed.rooms.remove(&room_uid);
        let room = {
            let transaction = self.connection.transaction()?;
            let room = catch_up_room(&transaction, room_uid)?;
            transaction.commit()?;
            room
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
        // A room made after another closed gets a number of its own.
        store.store(&[message(3, 1, "new room cake")], 100).unwrap();
        assert_eq!(ids(&store.search(3, "cake", None, 10, 9).unwrap()), [1]);
        assert_eq!(
            ids(&store.search(1, "room", None, 10, 9).unwrap()),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn the_index_catches_up_in_batches_off_the_commit_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = HistoryStore::open(&dir.path().join("h.db")).unwrap();
        store.store(&[message(1, 1, "cake")], 100).unwrap();
        assert_eq!(store.index_pending(), (true, false));
        store.catch_up_index().unwrap();
        assert_eq!(store.index_pending(), (false, false));
        let count = |store: &HistoryStore, word: &str| -> i64 {
            store
                .connection
                .query_row(
                    "SELECT count(*) FROM message_search WHERE message_search MATCH ?1",
                    params![word],
                    |row| row.get(0),
                )
                .unwrap()
        };
        assert_eq!(count(&store, "cake"), 1);
        for id in 2..=(INDEX_BACKLOG as u64 + 1) {
            store.store(&[message(1, id, "more")], 100).unwrap();
        }
        assert_eq!(store.index_pending(), (true, true));
        store.catch_up_index().unwrap();
        // Only the newest 100 are kept, and only they are in the index.
        assert_eq!(count(&store, "more"), 100);
        assert_eq!(count(&store, "cake"), 0);
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
    fn a_database_from_before_search_is_indexed_when_searched() {
        let dir = tempfile::tempdir().unwrap();
        let path = super::super::tests::first_schema_database(dir.path(), "an old cake");
        let mut store = HistoryStore::open(&path).unwrap();
        assert_eq!(ids(&store.search(1, "cake", None, 10, 9).unwrap()), [1]);
    }
}
