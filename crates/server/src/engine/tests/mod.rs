//! Unit tests of the engine's rules, driven with no sockets and a fake clock: datagrams go in
//! as bytes from made-up endpoints, and the effects come out as bytes for endpoints and jobs
//! for the history store. Unless a test attaches a history store, chat counts as stored at
//! once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chat_protocol::ucrp::{Datagram, ServerDatagram, V2_MARKER};
use chat_protocol::v2::{ClientV2, ServerV2};

use super::{
    DropReason, Effects, Endpoint, Engine, HistoryJob, Limits, Membership, Now, PendingMessage,
    RoomKind,
};
use crate::flood::FloodPolicy;

mod binding;
mod chat;
mod cluster;
mod membership;
mod memory;
mod room_features;

const ROOM: &str = "lobby";

thread_local! {
    /// The fake clock's origin, read once per test thread: from there on, time moves only
    /// when a test moves it.
    static ORIGIN: Instant = Instant::now();
}

/// The fake clock, `elapsed` after its origin.
fn at(elapsed: Duration) -> Now {
    Now {
        instant: ORIGIN.with(|origin| *origin),
        unix_ms: 1_000_000,
    }
    .later(elapsed)
}

/// The fake clock at its origin.
fn now() -> Now {
    at(Duration::ZERO)
}

fn engine() -> Engine {
    Engine::new(Limits::default(), FloodPolicy::OFF)
}

fn addr(port: u16) -> Endpoint {
    Endpoint::Udp(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn v2(message: &ClientV2) -> Vec<u8> {
    let mut bytes = vec![V2_MARKER];
    bytes.extend(serde_json::to_vec(message).unwrap());
    bytes
}

/// What the engine made of one datagram.
struct Handled {
    result: Result<(), DropReason>,
    /// Every queued frame with its destination.
    sent: Vec<(Endpoint, Vec<u8>)>,
    /// Work for the history store.
    jobs: Vec<HistoryJob>,
}

/// Every datagram in `fx`, with its destination.
fn sent_of(fx: &Effects) -> Vec<(Endpoint, Vec<u8>)> {
    fx.datagrams
        .datagrams()
        .map(|(frame, to)| (to, frame.to_vec()))
        .collect()
}

/// Sends one message body at the clock's origin and returns what the engine decided.
fn send(engine: &mut Engine, member: &Membership, from: Endpoint, body: &[u8]) -> Handled {
    send_at(engine, member, from, body, now())
}

/// Sends one message body at `clock` and returns what the engine decided.
fn send_at(
    engine: &mut Engine,
    member: &Membership,
    from: Endpoint,
    body: &[u8],
    clock: Now,
) -> Handled {
    let token = member.token.to_hex();
    let datagram = Datagram {
        room: &member.room,
        token: token.as_bytes(),
        message: body,
    };
    let mut fx = Effects::default();
    let result = engine.datagram(&datagram, from, clock, &mut fx);
    Handled {
        result,
        sent: sent_of(&fx),
        jobs: fx.history,
    }
}

/// Registers a version-2 member at `from` the way a client does: register, then echo the
/// challenge from the same address. Returns what the echo was answered with.
fn register_v2(engine: &mut Engine, member: &Membership, from: Endpoint) -> Handled {
    let asked = send(
        engine,
        member,
        from,
        &v2(&ClientV2::Register { last_id: None }),
    );
    let nonce = v2_events(&asked.sent, from)
        .into_iter()
        .find_map(|event| match event {
            ServerV2::Challenge { nonce } => Some(nonce),
            _ => None,
        })
        .expect("an unbound address is challenged");
    send(engine, member, from, &v2(&ClientV2::Echo { nonce }))
}

fn v2_events(sent: &[(Endpoint, Vec<u8>)], to: Endpoint) -> Vec<ServerV2> {
    sent.iter()
        .filter(|(addr, _)| *addr == to)
        .filter_map(|(_, frame)| match ServerDatagram::decode(frame) {
            Ok(ServerDatagram::V2(event)) => Some(event),
            _ => None,
        })
        .collect()
}

fn create_with_members(names: &[&str]) -> (Engine, Vec<Membership>) {
    let mut engine = engine();
    let mut fx = Effects::default();
    let mut members = vec![
        engine
            .create(ROOM, names[0], RoomKind::Public, now())
            .unwrap(),
    ];
    for name in &names[1..] {
        members.push(engine.join(ROOM, name, None, now(), &mut fx).unwrap());
    }
    (engine, members)
}
