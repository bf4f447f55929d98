//! The journal, `room_manager.json.journal`: the changes made since the state file was last
//! written, one JSON line each, so that making a handshake durable costs a small append
//! instead of a rewrite of the whole state.
//!
//! Every line is a [`JournalRecord`]: a [`StateChange`] and its `seq`, one above the previous
//! change's. The state file (the snapshot) says which record it includes last
//! (`journal_seq`); on load, only later records are applied. That makes a crash between
//! writing a snapshot and emptying the journal harmless. A crash during an append can leave a
//! torn last line, whose batch was never acknowledged: it is ignored. Any other line that does
//! not parse or does not apply is an inconsistent state, and the server refuses to start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::engine::durable::{
    JournalRecord, PersistedMember, PersistedRoom, PersistedState, STATE_FORMAT, StateChange,
    StateProblem,
};
use crate::escape::quoted;
use crate::persist::{self, StateError};

/// Longest line accepted: a record holds at most one room with one member, far below this.
const MAX_LINE: usize = 64 * 1024;

/// The journal that goes with a state file: `room_manager.json.journal`.
pub fn journal_path(state_path: &Path) -> PathBuf {
    let mut name = state_path.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// A state being brought up to date by journal records. Rooms are kept by name, tokens in a
/// set and members by uid, so that each record applies without a scan of the whole state or
/// of a whole room: a journal of many joins to one room replays in linear time.
#[derive(Debug)]
pub struct Replay {
    rooms: BTreeMap<String, ReplayRoom>,
    tokens: HashSet<String>,
    seq: u64,
    boot: u64,
}

/// A room being replayed: its members in join order, a left one leaving a hole (so that the
/// others' positions, indexed by uid, stay put).
#[derive(Debug)]
struct ReplayRoom {
    /// The room, its `members` taken out into `members` below until the replay finishes.
    room: PersistedRoom,
    members: Vec<Option<PersistedMember>>,
    by_uid: HashMap<u64, usize>,
}

impl ReplayRoom {
    fn new(mut room: PersistedRoom) -> Self {
        let members = std::mem::take(&mut room.members);
        let mut by_uid = HashMap::with_capacity(members.len());
        for (index, member) in members.iter().enumerate() {
            by_uid.entry(member.uid).or_insert(index);
        }
        Self {
            room,
            members: members.into_iter().map(Some).collect(),
            by_uid,
        }
    }

    fn member(&mut self, uid: u64) -> Result<&mut PersistedMember, StateProblem> {
        self.by_uid
            .get(&uid)
            .and_then(|&index| self.members.get_mut(index))
            .and_then(Option::as_mut)
            .ok_or_else(|| {
                StateProblem(format!(
                    "room {}: there is no member with uid {uid}",
                    quoted(&self.room.name)
                ))
            })
    }

    fn finish(self) -> PersistedRoom {
        PersistedRoom {
            members: self.members.into_iter().flatten().collect(),
            ..self.room
        }
    }
}

impl Replay {
    /// Starts from a snapshot.
    pub fn new(state: PersistedState) -> Result<Self, StateProblem> {
        let mut rooms = BTreeMap::new();
        let mut tokens = HashSet::new();
        for room in state.rooms {
            tokens.extend(room.members.iter().map(|member| member.token.clone()));
            let name = room.name.clone();
            if rooms.insert(name.clone(), ReplayRoom::new(room)).is_some() {
                return Err(StateProblem(format!(
                    "room {}: appears twice",
                    quoted(&name)
                )));
            }
        }
        Ok(Self {
            rooms,
            tokens,
            seq: state.journal_seq,
            boot: state.boot,
        })
    }

    /// Applies the next record, which must carry the next seq: a gap means lost changes.
    pub fn apply(&mut self, record: JournalRecord) -> Result<(), StateProblem> {
        let expected = self.seq + 1;
        if record.seq != expected {
            return Err(StateProblem(format!(
                "expected seq {expected}, found {}: the changes in between are missing",
                record.seq
            )));
        }
        self.apply_change(record.change)?;
        self.seq = record.seq;
        Ok(())
    }

    fn apply_change(&mut self, change: StateChange) -> Result<(), StateProblem> {
        let problem =
            |room: &str, what: String| StateProblem(format!("room {}: {what}", quoted(room)));
        match change {
            StateChange::RoomCreated { room } => {
                if self.rooms.contains_key(&room.name) {
                    return Err(problem(&room.name, "is created but already exists".into()));
                }
                for member in &room.members {
                    claim_token(&mut self.tokens, &room.name, member)?;
                }
                self.rooms.insert(room.name.clone(), ReplayRoom::new(room));
            }
            StateChange::MemberJoined { room, member } => {
                let target = self
                    .rooms
                    .get_mut(&room)
                    .ok_or_else(|| unknown_room(&room))?;
                if target.by_uid.contains_key(&member.uid) {
                    return Err(problem(
                        &room,
                        format!("member uid {} joins twice", member.uid),
                    ));
                }
                claim_token(&mut self.tokens, &room, &member)?;
                target.by_uid.insert(member.uid, target.members.len());
                target.members.push(Some(member));
            }
            StateChange::MemberLeft { room, uid, .. } => {
                let target = self
                    .rooms
                    .get_mut(&room)
                    .ok_or_else(|| unknown_room(&room))?;
                if target.member(uid)?.host {
                    // The engine records a host's departure as the room closing.
                    return Err(problem(&room, "its host leaves without closing it".into()));
                }
                let left = target
                    .by_uid
                    .remove(&uid)
                    .and_then(|index| target.members.get_mut(index))
                    .and_then(Option::take);
                if let Some(member) = left {
                    self.tokens.remove(&member.token);
                }
            }
            StateChange::RoomClosed { room, .. } => {
                let closed = self
                    .rooms
                    .remove(&room)
                    .ok_or_else(|| unknown_room(&room))?;
                for member in closed.members.into_iter().flatten() {
                    self.tokens.remove(&member.token);
                }
            }
            StateChange::IdsReserved { room, upto } => {
                let target = self
                    .rooms
                    .get_mut(&room)
                    .ok_or_else(|| unknown_room(&room))?;
                target.room.ids_reserved = target.room.ids_reserved.max(upto);
            }
            StateChange::HostChanged { room, uid } => {
                let target = self
                    .rooms
                    .get_mut(&room)
                    .ok_or_else(|| unknown_room(&room))?;
                target.member(uid)?;
                for member in target.members.iter_mut().flatten() {
                    member.host = member.uid == uid;
                }
            }
            StateChange::AddressesBanned { room, addresses } => {
                let target = self
                    .rooms
                    .get_mut(&room)
                    .ok_or_else(|| unknown_room(&room))?;
                target.room.banned.extend(addresses);
            }
            StateChange::TopicChanged { room, topic, .. } => {
                let target = self
                    .rooms
                    .get_mut(&room)
                    .ok_or_else(|| unknown_room(&room))?;
                target.room.topic = topic;
            }
            StateChange::MemberRegistered {
                room,
                uid,
                addr,
                version,
            } => {
                let member = self
                    .rooms
                    .get_mut(&room)
                    .ok_or_else(|| unknown_room(&room))?
                    .member(uid)?;
                member.addr = addr;
                member.version = version;
            }
            StateChange::MemberSealed {
                room,
                uid,
                key_id,
                keys,
            } => {
                let member = self
                    .rooms
                    .get_mut(&room)
                    .ok_or_else(|| unknown_room(&room))?
                    .member(uid)?;
                member.sealed = Some(crate::engine::durable::PersistedSealing { key_id, keys });
            }
            StateChange::Booted { boot } => self.boot = self.boot.max(boot),
        }
        Ok(())
    }

    /// The state with every applied record.
    pub fn finish(self) -> PersistedState {
        PersistedState {
            format: STATE_FORMAT,
            journal_seq: self.seq,
            rooms: self.rooms.into_values().map(ReplayRoom::finish).collect(),
            boot: self.boot,
        }
    }
}

fn unknown_room(room: &str) -> StateProblem {
    StateProblem(format!("there is no room named {}", quoted(room)))
}

fn claim_token(
    tokens: &mut HashSet<String>,
    room: &str,
    member: &PersistedMember,
) -> Result<(), StateProblem> {
    if tokens.insert(member.token.clone()) {
        Ok(())
    } else {
        Err(StateProblem(format!(
            "room {}: member {} reuses a token",
            quoted(room),
            quoted(&member.username)
        )))
    }
}

/// Loads the state as the last run left it: the state file with the journal's later records
/// applied; None when neither file exists. Both files are only read, so a state that is
/// refused stays as it was for someone to look at.
pub fn load(state_path: &Path) -> Result<Option<PersistedState>, StateError> {
    let snapshot = persist::load(state_path)?;
    let path = journal_path(state_path);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(snapshot),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let records = read_records(BufReader::new(file), &path)?;
    let had_snapshot = snapshot.is_some();
    let base = snapshot.unwrap_or_else(|| PersistedState::new(Vec::new()));
    let included = base.journal_seq;
    let mut later = records
        .into_iter()
        .filter(|(_, record)| record.seq > included)
        .peekable();
    if later.peek().is_none() {
        // Nothing after the snapshot: an empty journal, or a crash between writing the
        // snapshot and emptying the journal.
        return Ok(had_snapshot.then_some(base));
    }
    let mut replay = Replay::new(base).map_err(|problem| StateError::Inconsistent {
        path: state_path.to_owned(),
        problem,
    })?;
    for (line, record) in later {
        let seq = record.seq;
        replay
            .apply(record)
            .map_err(|problem| StateError::Inconsistent {
                path: path.clone(),
                problem: StateProblem(format!("line {line} (seq {seq}): {problem}")),
            })?;
    }
    Ok(Some(replay.finish()))
}

/// Parses every line with its number (from 1), checking that seqs increase. A last line that
/// does not parse was torn by a crash in the middle of an append and is skipped.
fn read_records(
    mut reader: impl BufRead,
    path: &Path,
) -> Result<Vec<(usize, JournalRecord)>, StateError> {
    let read_error = |source| StateError::Read {
        path: path.to_owned(),
        source,
    };
    let mut records: Vec<(usize, JournalRecord)> = Vec::new();
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let limit = u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX);
        let read = (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .map_err(read_error)?;
        if read == 0 {
            break;
        }
        number += 1;
        let parsed = if line.len() > MAX_LINE {
            Err(format!("the line is longer than {MAX_LINE} bytes"))
        } else {
            serde_json::from_slice::<JournalRecord>(&line).map_err(|e| e.to_string())
        };
        match parsed {
            Ok(record) => {
                if let Some((_, previous)) = records.last()
                    && record.seq <= previous.seq
                {
                    return Err(StateError::Inconsistent {
                        path: path.to_owned(),
                        problem: StateProblem(format!(
                            "line {number}: seq {} does not follow seq {}",
                            record.seq, previous.seq
                        )),
                    });
                }
                records.push((number, record));
            }
            Err(reason) => {
                let last = reader.fill_buf().map_err(read_error)?.is_empty();
                if last && line.len() <= MAX_LINE {
                    tracing::warn!(
                        path = %path.display(),
                        line = number,
                        // serde quotes what it could not parse, and names came from the network.
                        reason = %crate::escape::clipped(&reason.to_string()),
                        "ignoring the journal's torn last line: the server stopped while \
                         writing it, before the handshakes it records were answered"
                    );
                    break;
                }
                return Err(StateError::CorruptJournal {
                    path: path.to_owned(),
                    line: number,
                    reason,
                });
            }
        }
    }
    Ok(records)
}

/// Appends records to the journal in one write and flushes them to disk. The journal must
/// already exist (a snapshot creates it): if it vanished behind the server's back, recreating
/// it would lose what it held, so the append fails and the next write is a snapshot. On error
/// the journal is cut back to its previous length when possible, so that a refused batch
/// leaves no line behind.
pub fn append(state_path: &Path, records: &[JournalRecord]) -> io::Result<()> {
    let mut lines = Vec::with_capacity(records.len() * 256);
    for record in records {
        serde_json::to_writer(&mut lines, record)?;
        lines.push(b'\n');
    }
    let mut file = OpenOptions::new()
        .append(true)
        .open(journal_path(state_path))?;
    let before = file.metadata()?.len();
    let written = file.write_all(&lines).and_then(|()| file.sync_data());
    if written.is_err() {
        let _ = file.set_len(before).and_then(|()| file.sync_data());
    }
    written
}

/// Replaces the state file with `snapshot` atomically, then empties the journal. In that
/// order: until the snapshot is on disk the records are still needed, and once it is they are
/// skipped on load by their seq, so a crash between the two steps loses nothing.
pub fn compact(state_path: &Path, snapshot: &PersistedState) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(snapshot)?;
    persist::write_atomic(state_path, &bytes)?;
    let path = journal_path(state_path);
    persist::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?
        .sync_all()?;
    // The journal may have just been created: its directory entry must be durable too.
    persist::sync_directory_of(&path)
}

#[cfg(test)]
mod tests;
