//! The message history: an embedded SQLite database in WAL mode.
//!
//! Only the history thread ([`crate::history_writer`]) touches it after start-up, so reading
//! and writing it never blocks the relay. Rooms are keyed by a random `room_uid` kept in the
//! state file, not by name, so a closed room's name can be reused without inheriting history.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_protocol::v2::ChatMessage;
use rusqlite::{Connection, OptionalExtension, params};
use thiserror::Error;

use crate::engine::{HistoryReadError, HistorySource, StoredMessage};

pub mod search;

/// A database problem.
#[derive(Debug, Error)]
pub enum HistoryError {
    /// The database cannot be opened or is not a valid history database.
    #[error("cannot open the history database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The database file cannot be created.
    #[error("cannot create the history database {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A query or write failed.
    #[error("history database error: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// The open database.
#[derive(Debug)]
pub struct HistoryStore {
    connection: Connection,
    /// Rooms with messages the search index does not have yet.
    unindexed: search::Unindexed,
}

// SQLite integers are signed; uids and ids are stored bit-for-bit.
fn to_sql(value: u64) -> i64 {
    value as i64
}

fn from_sql(value: i64) -> u64 {
    value as u64
}

impl HistoryStore {
    /// Opens (or creates) the database and checks that it is one of ours.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        let open_error = |source| HistoryError::Open {
            path: path.to_owned(),
            source,
        };
        // Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files the mode of
        // the database file, and all three hold chat.
        crate::persist::private_file()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|error| HistoryError::Create {
                path: path.to_owned(),
                source: error,
            })?;
        let connection = Connection::open(path).map_err(open_error)?;
        // WAL: readers never block the writer. NORMAL: each commit is written to the OS before
        // the ack goes out, so acked messages survive the server being killed (kill -9);
        // only a power cut can lose the last moments, and FULL's fsync per batch cost more
        // server CPU than the whole relay (measured in docs/performance.md).
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS messages (
                     room_uid   INTEGER NOT NULL,
                     id         INTEGER NOT NULL,
                     member_uid INTEGER NOT NULL,
                     seq        INTEGER,
                     sender     TEXT NOT NULL,
                     text       TEXT NOT NULL,
                     ts         INTEGER NOT NULL,
                     PRIMARY KEY (room_uid, id)
                 ) WITHOUT ROWID;
                 DROP INDEX IF EXISTS messages_by_member;",
            )
            .map_err(open_error)?;
        migrate(&connection).map_err(open_error)?;
        search::prepare(&connection).map_err(open_error)?;
        // Touch the table so that a file that is not a database fails here, at start-up.
        connection
            .query_row("SELECT count(*) FROM messages LIMIT 1", [], |_| Ok(()))
            .map_err(open_error)?;
        Ok(Self {
            connection,
            unindexed: search::Unindexed::default(),
        })
    }

    /// Leaves checkpoints (copying the write-ahead log into the database, with an `fsync`
    /// or two) to [`checkpoint`](Self::checkpoint) on another connection, so that commits,
    /// and the acks behind them, do not wait for them. Should that connection fall behind,
    /// the commit that takes the log past `backstop` pages checkpoints itself, as SQLite
    /// does by default at 1,000. A commit that finds the other connection restarting the log
    /// waits for it, at most `wait`.
    pub fn checkpoint_elsewhere(&self, backstop: u32, wait: Duration) -> Result<(), HistoryError> {
        self.connection.busy_timeout(wait)?;
        self.connection
            .execute_batch(&format!("PRAGMA wal_autocheckpoint = {backstop};"))?;
        Ok(())
    }

    /// Copies what it can of the write-ahead log into the database without holding up the
    /// writer, and returns how many frames the log holds. With `restart`, it waits (at most
    /// `wait`) for a gap between commits, copies the rest while the writer waits, and lets the
    /// next commit start the log over: what bounds the log when commits never pause.
    pub fn checkpoint(&self, restart: bool, wait: Duration) -> Result<u64, HistoryError> {
        self.connection.busy_timeout(wait)?;
        let mode = if restart { "RESTART" } else { "PASSIVE" };
        let frames: i64 =
            self.connection
                .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
                    row.get(1)
                })?;
        Ok(u64::try_from(frames).unwrap_or(0))
    }

    /// Stores a batch in one transaction and trims each touched room to `keep` messages.
    pub fn store<'a>(
        &mut self,
        batch: impl IntoIterator<Item = &'a StoredMessage> + Clone,
        keep: u64,
    ) -> Result<(), HistoryError> {
        let transaction = self.connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT OR REPLACE INTO messages
                     (room_uid, id, member_uid, seq, sender, text, ts, me, recipient, recipient_uid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for stored in batch.clone() {
                self.unindexed.stored(stored.room_uid);
                insert.execute(params![
                    to_sql(stored.room_uid),
                    to_sql(stored.message.id),
                    to_sql(stored.member_uid),
                    stored.seq.map(to_sql),
                    stored.message.from,
                    stored.message.text,
                    to_sql(stored.message.ts),
                    stored.message.me,
                    stored.message.to,
                    stored.recipient_uid.map(to_sql),
                ])?;
            }
            let mut trim = transaction
                .prepare_cached("DELETE FROM messages WHERE room_uid = ?1 AND id <= ?2")?;
            let mut newest: Vec<(u64, u64)> = Vec::new();
            for stored in batch {
                match newest.iter_mut().find(|(room, _)| *room == stored.room_uid) {
                    Some((_, id)) => *id = (*id).max(stored.message.id),
                    None => newest.push((stored.room_uid, stored.message.id)),
                }
            }
            for (room_uid, id) in newest {
                if id > keep {
                    trim.execute(params![to_sql(room_uid), to_sql(id - keep)])?;
                }
            }
        }
        transaction.commit()?;
        Ok(())
    }

    /// The newest id stored for a room (0 when none).
    pub fn latest_id(&self, room_uid: u64) -> Result<u64, HistoryError> {
        let latest: Option<i64> = self
            .connection
            .query_row(
                "SELECT max(id) FROM messages WHERE room_uid = ?1",
                params![to_sql(room_uid)],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        Ok(latest.map_or(0, from_sql))
    }

    /// Messages with `after < id <= upto`, oldest first, at most `limit`.
    pub fn range(
        &self,
        room_uid: u64,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, HistoryError> {
        self.query(
            "SELECT room_uid, id, member_uid, seq, sender, text, ts, me, recipient, recipient_uid FROM messages
             WHERE room_uid = ?1 AND id > ?2 AND id <= ?3 ORDER BY id ASC LIMIT ?4",
            params![to_sql(room_uid), to_sql(after), to_sql(upto), limit as i64],
        )
    }

    /// The newest `limit` messages before `before` (all when None), oldest first, and whether
    /// older ones remain.
    pub fn page(
        &self,
        room_uid: u64,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<StoredMessage>, bool), HistoryError> {
        self.page_for(room_uid, before, limit, None)
    }

    /// [`page`](Self::page) as the member with stable id `reader` may read it: without the
    /// direct messages between others (with `None`, everything).
    pub fn page_for(
        &self,
        room_uid: u64,
        before: Option<u64>,
        limit: usize,
        reader: Option<u64>,
    ) -> Result<(Vec<StoredMessage>, bool), HistoryError> {
        let before = before.map_or(i64::MAX, to_sql);
        let everything = reader.is_none();
        let reader = reader.map_or(-1, to_sql);
        let mut newest_first = self.query(
            "SELECT room_uid, id, member_uid, seq, sender, text, ts, me, recipient, recipient_uid FROM messages
             WHERE room_uid = ?1 AND id < ?2
               AND (?5 OR recipient_uid IS NULL OR recipient_uid = ?4 OR member_uid = ?4)
             ORDER BY id DESC LIMIT ?3",
            params![to_sql(room_uid), before, limit as i64 + 1, reader, everything],
        )?;
        let more = newest_first.len() > limit;
        newest_first.truncate(limit);
        newest_first.reverse();
        Ok((newest_first, more))
    }

    /// A room's most recent messages, newest first, for rebuilding its members' deduplication
    /// windows at start-up. (A per-member index would serve this too, but every insert would
    /// then write a second B-tree, on the busiest path the database has.)
    pub fn recent(&self, room_uid: u64, limit: usize) -> Result<Vec<StoredMessage>, HistoryError> {
        self.query(
            "SELECT room_uid, id, member_uid, seq, sender, text, ts, me, recipient, recipient_uid FROM messages
             WHERE room_uid = ?1 ORDER BY id DESC LIMIT ?2",
            params![to_sql(room_uid), limit as i64],
        )
    }

    /// Forgets a closed room's messages.
    pub fn delete_room(&mut self, room_uid: u64) -> Result<(), HistoryError> {
        self.connection.execute(
            "DELETE FROM messages WHERE room_uid = ?1",
            params![to_sql(room_uid)],
        )?;
        self.forget_indexed_room(room_uid)?;
        Ok(())
    }

    /// Forgets a room's messages up to `upto` (a pair room's ended conversation).
    pub fn delete_up_to(&mut self, room_uid: u64, upto: u64) -> Result<(), HistoryError> {
        // The index purges them when it next catches up with the room.
        self.unindexed.stored(room_uid);
        self.connection.execute(
            "DELETE FROM messages WHERE room_uid = ?1 AND id <= ?2",
            params![to_sql(room_uid), to_sql(upto)],
        )?;
        Ok(())
    }

    /// Forgets the history of every room not in `live`: rooms closed while the server was
    /// down, or whose close was not written before a crash.
    pub fn retain_rooms(&mut self, live: &[u64]) -> Result<(), HistoryError> {
        let stored: Vec<i64> = {
            let mut statement = self.connection.prepare(
                "SELECT DISTINCT room_uid FROM messages UNION SELECT room_uid FROM search_rooms",
            )?;
            statement
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?
        };
        for room_uid in stored.into_iter().map(from_sql) {
            if !live.contains(&room_uid) {
                self.delete_room(room_uid)?;
            }
        }
        Ok(())
    }

    fn query(
        &self,
        sql: &str,
        parameters: impl rusqlite::Params,
    ) -> Result<Vec<StoredMessage>, HistoryError> {
        let mut statement = self.connection.prepare_cached(sql)?;
        let rows = statement.query_map(parameters, |row| {
            Ok(StoredMessage {
                room_uid: from_sql(row.get(0)?),
                member_uid: from_sql(row.get(2)?),
                seq: row.get::<_, Option<i64>>(3)?.map(from_sql),
                recipient_uid: row.get::<_, Option<i64>>(9)?.map(from_sql),
                message: ChatMessage {
                    id: from_sql(row.get(1)?),
                    from: row.get(4)?,
                    text: row.get(5)?,
                    ts: from_sql(row.get(6)?),
                    me: row.get(7)?,
                    to: row.get(8)?,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Columns added since the first schema, each with the `ALTER TABLE` that adds it to an
/// older database: `me` (an action, `/me`) and `recipient` (a direct message's recipient,
/// by the name it had, and `recipient_uid`, by its stable id; NULL for the whole room).
const ADDED_COLUMNS: [(&str, &str); 3] = [
    (
        "me",
        "ALTER TABLE messages ADD COLUMN me INTEGER NOT NULL DEFAULT 0",
    ),
    (
        "recipient",
        "ALTER TABLE messages ADD COLUMN recipient TEXT",
    ),
    (
        "recipient_uid",
        "ALTER TABLE messages ADD COLUMN recipient_uid INTEGER",
    ),
];

/// Brings a database made by an older version up to the current schema.
fn migrate(connection: &Connection) -> Result<(), rusqlite::Error> {
    let mut statement = connection.prepare("SELECT name FROM pragma_table_info('messages')")?;
    let present: Vec<String> = statement
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for (column, alter) in ADDED_COLUMNS {
        if !present.iter().any(|name| name == column) {
            connection.execute_batch(alter)?;
        }
    }
    Ok(())
}

/// What a restore reads, through the engine's read-only view of the history.
impl HistorySource for HistoryStore {
    fn latest_id(&self, room_uid: u64) -> Result<u64, HistoryReadError> {
        HistoryStore::latest_id(self, room_uid).map_err(read_error)
    }

    fn range(
        &self,
        room_uid: u64,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, HistoryReadError> {
        HistoryStore::range(self, room_uid, after, upto, limit).map_err(read_error)
    }

    fn recent(&self, room_uid: u64, limit: usize) -> Result<Vec<StoredMessage>, HistoryReadError> {
        HistoryStore::recent(self, room_uid, limit).map_err(read_error)
    }
}

fn read_error(error: HistoryError) -> HistoryReadError {
    HistoryReadError(Box::new(error))
}

#[cfg(test)]
mod tests;
