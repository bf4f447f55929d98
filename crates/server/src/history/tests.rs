//! The history store against real SQLite files: storing, paging, retention, direct
//! messages read only by their two members, and databases from older versions.

use super::*;

fn message(room_uid: u64, id: u64, seq: u64) -> StoredMessage {
    StoredMessage {
        recipient_uid: None,
        room_uid,
        member_uid: 7,
        seq: Some(seq),
        message: ChatMessage {
            id,
            from: "alice".into(),
            text: format!("message {id}"),
            ts: 1000 + id,
            me: false,
            to: None,
        },
    }
}

#[test]
fn the_database_and_its_wal_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sqlite3");
    let mut store = HistoryStore::open(&path).unwrap();
    store.store(&[message(1, 1, 1)], 25).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{:?} has mode {mode:o}", entry.file_name());
        checked += 1;
    }
    assert_eq!(checked, 3, "the database, its -wal and its -shm");
}

#[test]
fn stores_pages_and_trims() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = HistoryStore::open(&dir.path().join("h.sqlite3")).unwrap();
    let batch: Vec<_> = (1..=30).map(|id| message(1, id, id)).collect();
    store.store(&batch, 25).unwrap();
    store.store(&[message(2, 1, 1)], 25).unwrap();
    assert_eq!(store.latest_id(1).unwrap(), 30);
    assert_eq!(store.latest_id(3).unwrap(), 0);
    let (page, more) = store.page(1, None, 10).unwrap();
    assert_eq!(page.first().unwrap().message.id, 21);
    assert_eq!(page.last().unwrap().message.id, 30);
    assert!(more);
    let (oldest, more) = store.page(1, Some(10), 10).unwrap();
    let ids: Vec<u64> = oldest.iter().map(|m| m.message.id).collect();
    assert_eq!(ids, [6, 7, 8, 9], "ids up to 5 were trimmed away");
    assert!(!more);
    let (rest, more) = store.page(1, Some(21), 100).unwrap();
    assert_eq!(rest.len(), 15);
    assert!(!more);
    let range = store.range(1, 27, 29, 10).unwrap();
    assert_eq!(
        range.iter().map(|m| m.message.id).collect::<Vec<_>>(),
        [28, 29]
    );
    store.retain_rooms(&[2]).unwrap();
    assert_eq!(store.latest_id(1).unwrap(), 0);
    assert_eq!(store.latest_id(2).unwrap(), 1);
}

#[test]
fn a_page_leaves_out_direct_messages_between_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = HistoryStore::open(&dir.path().join("h.db")).unwrap();
    let mut direct = message(1, 2, 2);
    direct.recipient_uid = Some(8);
    direct.message.to = Some("bob".into());
    let batch = [message(1, 1, 1), direct, message(1, 3, 3)];
    store.store(&batch, 100).unwrap();
    let ids = |reader| -> Vec<u64> {
        let (page, _) = store.page_for(1, None, 10, reader).unwrap();
        page.iter().map(|m| m.message.id).collect()
    };
    assert_eq!(ids(None), [1, 2, 3]);
    assert_eq!(ids(Some(7)), [1, 2, 3], "the sender reads it");
    assert_eq!(ids(Some(8)), [1, 2, 3], "the recipient reads it");
    assert_eq!(ids(Some(9)), [1, 3], "nobody else does");
    let (page, _) = store.page_for(1, None, 10, Some(8)).unwrap();
    assert_eq!(page[1].recipient_uid, Some(8));
    assert_eq!(page[1].message.to.as_deref(), Some("bob"));
}

#[test]
fn a_database_from_before_actions_and_direct_messages_is_brought_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let path = first_schema_database(dir.path(), "from before");
    let mut store = HistoryStore::open(&path).unwrap();
    store.store(&[message(1, 2, 2)], 100).unwrap();
    let (page, _) = store.page_for(1, None, 10, Some(9)).unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].message.text, "from before");
    assert!(!page[0].message.me && page[0].recipient_uid.is_none());
    drop(store);
    // Opening it again finds the columns there.
    HistoryStore::open(&path).unwrap();
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.sqlite3");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let error = HistoryStore::open(&path).unwrap_err();
    assert!(error.to_string().contains("h.sqlite3"), "{error}");
}

/// A database of the first schema (before actions, direct messages and search) holding one
/// message, id 1 of room 1 from alice (uid 7) with `text`; returns its path.
pub(super) fn first_schema_database(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("old.db");
    let old = Connection::open(&path).unwrap();
    old.execute_batch(
        "CREATE TABLE messages (
             room_uid INTEGER NOT NULL, id INTEGER NOT NULL, member_uid INTEGER NOT NULL,
             seq INTEGER, sender TEXT NOT NULL, text TEXT NOT NULL, ts INTEGER NOT NULL,
             PRIMARY KEY (room_uid, id)
         ) WITHOUT ROWID;",
    )
    .unwrap();
    old.execute(
        "INSERT INTO messages VALUES (1, 1, 7, 1, 'alice', ?1, 5)",
        [text],
    )
    .unwrap();
    path
}
