//! The handshakes themselves: create, join, pair and list, with their cheap checks, password
//! work, room quota and the wait for durability. The engine is locked only to check and to
//! change, never across an `.await`; what a change decides goes out through the [`Outlet`].
//!
//! [`Outlet`]: crate::send::Outlet

use std::net::SocketAddr;

use chat_protocol::listing::ListRequest;
use chat_protocol::names;
use chat_protocol::sealed::KeyMaterial;
use chat_protocol::tcrp::{AttachRequest, ErrorCode, Frame, Grant, Operation, State, UserRequest};
use tokio::time::Instant;

use super::{ControlContext, Reply, to_json_payload};
use crate::engine::sealing::AttachError;
use crate::engine::{JoinError, Membership, RoomKind};
use crate::escape::quoted;
use crate::password;
use crate::password_gate::GateRefusal;
use crate::room_list;
use crate::shared::{self, lock};
use crate::token::Token;

/// Longest password accepted; argon2 hashes any length, but a bound keeps the work bounded.
const MAX_PASSWORD_LEN: usize = 1024;

/// Why a create, join or pair was refused: the contract's code and a sentence for the user.
#[derive(Debug)]
pub struct Refusal {
    /// The code (protocol.md, "Refusals").
    pub code: ErrorCode,
    /// What the user reads.
    pub message: String,
}

impl From<JoinError> for Refusal {
    fn from(error: JoinError) -> Self {
        Self {
            code: error.code(),
            message: error.to_string(),
        }
    }
}

impl Refusal {
    /// A refusal with this code and sentence.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Grants a create, join or pair (not list) to `peer`, durably, or says why not: the one path
/// for both front ends (the TCP control plane and the HTTP API).
pub async fn grant(
    operation: Operation,
    room_name: &str,
    user: UserRequest,
    peer: SocketAddr,
    context: &ControlContext,
    keys: Option<&KeyMaterial>,
) -> Result<Membership, Refusal> {
    let username = user.username.clone();
    let result = match operation {
        Operation::Create => create(room_name, user, peer, context, keys).await,
        Operation::Join => match join(room_name, user.clone(), peer, context, keys).await {
            // Scale-out: the room may be a moment old on another node; once this node has
            // caught up with Redis, try once more.
            Err(refusal)
                if refusal.code == ErrorCode::RoomNotFound && context.writer.catch_up().await =>
            {
                join(room_name, user, peer, context, keys).await
            }
            other => other,
        },
        Operation::Pair => pair(user, context, keys).await,
        Operation::List => Err(Refusal::new(
            ErrorCode::UnsupportedOperation,
            "list grants no membership",
        )),
        Operation::Attach => Err(Refusal::new(
            ErrorCode::EncryptionRequired,
            "attach is for a TLS connection",
        )),
    };
    let op = match operation {
        Operation::Create => "create",
        Operation::Join => "join",
        Operation::Pair => "pair",
        Operation::List => "list",
        Operation::Attach => "attach",
    };
    context.metrics.handshake(
        op,
        crate::metrics::result_label(result.as_ref().map(|_| ()).map_err(|r| r.code)),
    );
    match &result {
        Ok(membership) => {
            lock(&context.engine).set_home_ip(&membership.token, peer.ip());
            if let (Some(key_id), Some(keys)) = (membership.key_id, keys) {
                // Durable now: datagrams under these keys may come.
                context
                    .tunnel
                    .keys
                    .insert(key_id, &membership.room, &membership.token, keys);
            }
            tracing::info!(%peer, room = %quoted(&membership.room), user = %quoted(&membership.username), host = membership.host, token = %membership.token, ?operation, "handshake granted");
        }
        Err(refusal) => {
            tracing::info!(%peer, room = %quoted(room_name), user = %quoted(&username), code = %refusal.code, ?operation, "handshake refused");
        }
    }
    result
}

/// Answers one request; with the key id its connection now carries when it granted or
/// attached a version-3 membership (`keys`: the TLS session's, on a TLS connection).
pub(super) async fn process(
    frame: Frame,
    peer: SocketAddr,
    context: &ControlContext,
    keys: Option<KeyMaterial>,
) -> (Reply, Option<u32>) {
    let operation_byte = frame.operation;
    match keys {
        Some(keys) => answer(frame, peer, context, Some(keys)).await,
        None if context.require_encryption => {
            context.metrics.handshake("plain", "encryption_required");
            (
                Reply::refused(
                    operation_byte,
                    frame.room_name,
                    ErrorCode::EncryptionRequired,
                    "this server accepts only encrypted connections; use a client that \
                     speaks version 3 (chat-client does by default)"
                        .into(),
                ),
                None,
            )
        }
        None => answer(frame, peer, context, None).await,
    }
}

async fn answer(
    frame: Frame,
    peer: SocketAddr,
    context: &ControlContext,
    keys: Option<KeyMaterial>,
) -> (Reply, Option<u32>) {
    let Frame {
        operation: operation_byte,
        state,
        room_name,
        payload,
    } = frame;
    let refuse = |code, message: String| {
        (
            Reply::refused(operation_byte, room_name.clone(), code, message),
            None,
        )
    };
    if state != State::Request {
        return refuse(
            ErrorCode::InvalidRequest,
            format!(
                "expected a request frame (state 0), got state {}",
                state as u8
            ),
        );
    }
    let Some(operation) = Operation::from_byte(operation_byte) else {
        return refuse(
            ErrorCode::UnsupportedOperation,
            format!(
                "operation {operation_byte} is not supported; use 1 (create), 2 (join), 3 (pair) or 4 (list)"
            ),
        );
    };
    if operation == Operation::List {
        let request = match ListRequest::parse(&payload) {
            Ok(request) => request,
            Err(error) => return refuse(ErrorCode::InvalidRequest, error.to_string()),
        };
        let list = lock(&context.engine).list();
        return (
            Reply::accepted(operation_byte, room_name, room_list::page(list, &request)),
            None,
        );
    }
    if operation == Operation::Attach {
        let Some(keys) = keys else {
            return refuse(
                ErrorCode::EncryptionRequired,
                "attach needs an encrypted (TLS) connection".into(),
            );
        };
        return match attach(&room_name, &payload, peer, keys, context).await {
            Ok((membership, key_id)) => (
                Reply::accepted(
                    operation_byte,
                    membership.room.clone(),
                    to_json_payload(&grant_for(&membership, Some(key_id), context)),
                ),
                Some(key_id),
            ),
            Err(refusal) => refuse(refusal.code, refusal.message),
        };
    }
    let user = match UserRequest::parse(&payload) {
        Ok(user) => user,
        Err(error) => {
            tracing::info!(%peer, room = %quoted(&room_name), code = %ErrorCode::InvalidRequest, ?operation, "handshake refused");
            return refuse(ErrorCode::InvalidRequest, error.to_string());
        }
    };
    let granted = match grant(operation, &room_name, user, peer, context, keys.as_ref()).await {
        Ok(membership) => membership,
        Err(refusal) => return refuse(refusal.code, refusal.message),
    };
    let key_id = granted.key_id;
    let grant = grant_for(&granted, key_id, context);
    // Pair rooms get their name from the server; echo it so the client learns it.
    (
        Reply::accepted(operation_byte, granted.room, to_json_payload(&grant)),
        key_id,
    )
}

/// The grant a client is given for `membership`.
fn grant_for(membership: &Membership, key_id: Option<u32>, context: &ControlContext) -> Grant {
    Grant {
        token: membership.token.to_hex(),
        room: Some(membership.room.clone()),
        username: Some(membership.username.clone()),
        host: Some(membership.host),
        udp_port: Some(context.udp_port),
        send_burst: context.send_pace.map(|(burst, _)| burst),
        send_interval_ms: context.send_pace.map(|(_, interval)| interval),
        http_port: context.http_port,
        key_id,
    }
}

/// Seals a membership just granted over TLS (`keys`), under the grant's own lock. Should
/// drawing a key id fail (the OS's generator), the member was made but is never answered: it
/// never registers and is removed as idle.
fn sealed(
    engine: &mut crate::engine::Engine,
    membership: Membership,
    keys: Option<&KeyMaterial>,
) -> Result<Membership, JoinError> {
    match keys {
        None => Ok(membership),
        Some(keys) => engine.seal(membership, keys.clone()),
    }
}

/// Operation 5: renews a version-3 member's keys from this TLS session.
async fn attach(
    room_name: &str,
    payload: &[u8],
    peer: SocketAddr,
    keys: KeyMaterial,
    context: &ControlContext,
) -> Result<(Membership, u32), Refusal> {
    let request = AttachRequest::parse(payload)
        .map_err(|error| Refusal::new(ErrorCode::InvalidRequest, error.to_string()))?;
    let token = Token::from_hex(request.token.as_bytes())
        .ok_or_else(|| Refusal::new(ErrorCode::RoomNotFound, AttachError::Unknown.to_string()))?;
    let attached = {
        let mut engine = lock(&context.engine);
        engine
            .attach(&token, room_name, keys.clone())
            .map(|(membership, key_id)| (membership, key_id, engine.journal_seq()))
    };
    let (membership, key_id, journal_seq) = match attached {
        Ok(attached) => attached,
        Err(error) => {
            context.metrics.handshake("attach", error.code().as_str());
            return Err(Refusal::new(error.code(), error.to_string()));
        }
    };
    make_durable((membership.clone(), journal_seq), context).await?;
    context
        .tunnel
        .keys
        .insert(key_id, &membership.room, &membership.token, &keys);
    context.metrics.handshake("attach", "ok");
    tracing::info!(%peer, room = %quoted(&membership.room), user = %quoted(&membership.username), key_id, "attached");
    Ok((membership, key_id))
}

fn check_password(password: &str) -> Result<(), Refusal> {
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            format!("a room password must be 1 to {MAX_PASSWORD_LEN} bytes long"),
        ));
    }
    Ok(())
}

async fn create(
    room_name: &str,
    user: UserRequest,
    peer: SocketAddr,
    context: &ControlContext,
    keys: Option<&KeyMaterial>,
) -> Result<Membership, Refusal> {
    // Cheap checks first, so that a hopeless request never costs a password hash.
    lock(&context.engine).check_create(room_name, &user.username)?;
    // Lock order: the engine, then the quota (never the reverse), so `alive` reads the guard
    // already held instead of locking the engine under the quota's lock.
    let place = {
        let engine = lock(&context.engine);
        context
            .room_quota
            .reserve(peer.ip(), |name, uid| engine.room_uid(name) == Some(uid))
    }
    .ok_or_else(|| {
        Refusal::new(
            ErrorCode::TooManyRooms,
            format!(
                "your address already has {} rooms open; close one before creating another",
                context.room_quota.per_address()
            ),
        )
    })?;
    let kind = match user.password {
        None => RoomKind::Public,
        Some(password) => {
            check_password(&password)?;
            let hashed = context
                .passwords
                .turn(Instant::now() + context.request_timeout)
                .await
                .map_err(gate_refusal)?
                .run(move || password::hash(&password))
                .await
                .map_err(gate_refusal)?
                .map_err(|e| Refusal::new(ErrorCode::ServerBusy, e.to_string()))?;
            RoomKind::Private {
                password_hash: hashed,
            }
        }
    };
    let granted = {
        let mut engine = lock(&context.engine);
        engine
            .create(room_name, &user.username, kind, shared::now())
            .and_then(|membership| sealed(&mut engine, membership, keys))
            .map(|membership| (membership, engine.journal_seq()))
    };
    let membership = make_durable(granted?, context).await?;
    // Read first: a guard in the `if let` itself would be held into `granted`.
    let uid = lock(&context.engine).room_uid(&membership.room);
    if let Some(uid) = uid {
        place.granted(&membership.room, uid);
    }
    Ok(membership)
}

async fn join(
    room_name: &str,
    user: UserRequest,
    peer: SocketAddr,
    context: &ControlContext,
    keys: Option<&KeyMaterial>,
) -> Result<Membership, Refusal> {
    // Cheap checks first (a ban, names, room, capacity, name taken), so that a hopeless
    // request never costs a password check.
    let banned = |engine: &crate::engine::Engine| {
        if engine.is_banned(room_name, peer.ip()) {
            Err(JoinError::Banned(room_name.to_owned()))
        } else {
            Ok(())
        }
    };
    banned(&lock(&context.engine))?;
    let private =
        lock(&context.engine).check_join(room_name, &user.username, std::time::Instant::now())?;
    let verified_for = match private {
        None => None,
        Some((room_id, stored_hash)) => {
            let room_key = names::room_key(room_name);
            let gate = &context.passwords;
            gate.admit(peer.ip(), &room_key, std::time::Instant::now())
                .map_err(gate_refusal)?;
            let turn = gate
                .turn(Instant::now() + context.request_timeout)
                .await
                .map_err(gate_refusal)?;
            // Failures may have piled up while this request waited for its turn.
            gate.admit(peer.ip(), &room_key, std::time::Instant::now())
                .map_err(gate_refusal)?;
            let password = user.password.clone().unwrap_or_default();
            let matches = turn
                .run(move || password::verify(&password, &stored_hash))
                .await
                .map_err(gate_refusal)?;
            if !matches {
                gate.failed(peer.ip(), &room_key, std::time::Instant::now());
                return Err(JoinError::BadPassword(room_name.to_owned()).into());
            }
            Some(room_id)
        }
    };
    let granted = context.outlet.apply(&context.engine, |engine, fx| {
        // A ban may have come while the password was checked.
        banned(engine)?;
        engine
            .join(room_name, &user.username, verified_for, shared::now(), fx)
            .and_then(|membership| sealed(engine, membership, keys))
            .map(|membership| (membership, engine.journal_seq()))
    });
    make_durable(granted?, context).await
}

/// The refusal for a password that may not be checked now.
fn gate_refusal(refusal: GateRefusal) -> Refusal {
    match refusal {
        GateRefusal::Address => Refusal::new(
            ErrorCode::TooManyAttempts,
            "too many wrong passwords from your address; try again in a minute",
        ),
        GateRefusal::Room => Refusal::new(
            ErrorCode::TooManyAttempts,
            "too many wrong passwords for this room lately; try again in a minute",
        ),
        GateRefusal::Busy => Refusal::new(
            ErrorCode::ServerBusy,
            "the server is busy checking passwords; try again shortly",
        ),
    }
}

async fn pair(
    user: UserRequest,
    context: &ControlContext,
    keys: Option<&KeyMaterial>,
) -> Result<Membership, Refusal> {
    let granted = context.outlet.apply(&context.engine, |engine, fx| {
        engine
            .pair(&user.username, shared::now(), fx)
            .and_then(|membership| sealed(engine, membership, keys))
            .map(|membership| (membership, engine.journal_seq()))
    });
    make_durable(granted?, context).await
}

/// Waits until the grant is on disk; if the write fails, the grant is taken back and refused.
async fn make_durable(
    (membership, journal_seq): (Membership, u64),
    context: &ControlContext,
) -> Result<Membership, Refusal> {
    match context.writer.durable(journal_seq).await {
        Ok(()) => Ok(membership),
        Err(failure) => {
            context.outlet.apply(&context.engine, |engine, fx| {
                engine.revoke(&membership.token, std::time::Instant::now(), fx);
            });
            context.writer.schedule();
            Err(Refusal::new(
                ErrorCode::ServerBusy,
                format!("the server cannot save its state right now ({failure}); try again later"),
            ))
        }
    }
}
