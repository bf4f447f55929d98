//! The paced load engine shared by every relay-style scenario and by the baseline.
//!
//! One pacer (the calling thread) sends message `k` of a run at `start + k / rate`, an
//! absolute schedule, so a late wake-up is caught up at once instead of drifting. Message `k`
//! leaves from sender `k % S`. Receiver threads (a few, each polling a share of the member
//! sockets with mio) stamp every arrival against the same base `Instant`, de-duplicate by
//! (member, sender, sequence), and feed an hdrhistogram. After the last send the run waits a
//! drain period (ending early once every expected delivery, and in version 2 every ack,
//! arrived); anything later counts as missing.
//!
//! In version 2 each sender numbers its messages with its own `seq`, and the receivers also
//! count the acks that come back to the senders. Nothing is retransmitted: the run measures
//! the server, not the protocol's recovery, so a lost datagram is loss as in version 1.
//!
//! A run may also have WebSocket members (version 2 only): they come after the UDP members
//! in the sender numbering, the pacer queues their messages on their connections, and one
//! more thread tallies what their connection tasks read. Every figure is kept per transport
//! too ([`LoadOutcome::parts`]), by where it was received.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::sealed::ReplayWindow;
use chat_protocol::ucrp::{NOTICE_SENDER, ServerDatagram};
use chat_protocol::v2::ServerV2;
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

use crate::error::{BenchError, Result};
use crate::member::{Member, quiesce};
use crate::payload::{Stamp, parse_payload, write_payload};
use crate::procfs::CpuSource;
use crate::sealed::TunnelRead;
use crate::wire::{Protocol, append_v2_chat, append_v2_chat_json};
use crate::ws_member::{WsArrival, WsFleet, WsMember};

/// Latencies are recorded in nanoseconds, resolved to 3 significant figures, up to a minute.
const LATENCY_MAX_NANOS: u64 = 60_000_000_000;
/// How often receivers look at the stop flag when nothing arrives.
const RECEIVE_POLL: Duration = Duration::from_millis(20);
/// Reads from one socket before the receiver moves to the next ready one.
const READS_PER_TURN: usize = 256;
/// How long the pacer may keep sending after the planned end when it fell behind.
const SEND_GRACE: Duration = Duration::from_millis(250);
/// How often the drain wait checks whether everything arrived.
const DRAIN_CHECK: Duration = Duration::from_millis(5);
/// Longest wait for the relay to fall silent before a run.
const QUIESCE_LIMIT: Duration = Duration::from_secs(10);
/// Most WebSocket arrivals tallied after the run stopped (they were read before it).
const MAX_QUEUED_AFTER_STOP: usize = 10_000_000;
/// Retries of a send that found the socket buffer full.
const SEND_RETRIES: u32 = 10_000;

/// What one load run does.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Stamped into every payload; datagrams of other runs are counted as stale.
    pub run_id: u32,
    /// Aggregate offered rate over all senders, messages per second.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// Upper bound on messages, whatever rate × duration says.
    pub max_messages: u64,
    /// Bytes of chat text per message.
    pub payload_len: usize,
    /// How long to wait for stragglers after the last send.
    pub drain: Duration,
    /// Receiver threads.
    pub receiver_threads: usize,
}

/// The members of a run and where they send.
#[derive(Debug)]
pub struct Fabric<'a> {
    /// Every UDP member; each one receives. The rooms hold these and the WebSocket members,
    /// nobody else.
    pub members: &'a [Member],
    /// WebSocket members, if any; each one receives too.
    pub ws: Option<&'a WsFleet>,
    /// Those that send, in turn: indices into `members`, then, from `members.len()` on, into
    /// the WebSocket members.
    pub senders: &'a [usize],
    /// The relay's UDP address.
    pub relay: SocketAddr,
    /// Scale-out: each UDP member's own node (by member index), when the members are spread
    /// over several; `None`: all use `relay`.
    pub member_relays: Option<&'a [SocketAddr]>,
    /// Whose CPU time the run charges.
    pub cpu: CpuSource,
    /// The version the members speak.
    pub protocol: Protocol,
}

/// Which way a member talks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UCRP datagrams.
    Udp,
    /// Version-2 JSON over a WebSocket.
    Ws,
}

impl Transport {
    /// Both, in report order.
    pub const ALL: [Self; 2] = [Self::Udp, Self::Ws];

    /// Its name in report rows.
    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Ws => "ws",
        }
    }

    fn slot(self) -> usize {
        match self {
            Self::Udp => 0,
            Self::Ws => 1,
        }
    }
}

/// One transport's share of a run: what its senders sent and had acked, what its receivers
/// were owed and got.
#[derive(Debug, Clone)]
pub struct LoadPart {
    /// The transport.
    pub transport: Transport,
    /// Its members (all of them receive).
    pub receivers: usize,
    /// Its senders.
    pub senders: usize,
    /// Messages its senders handed on.
    pub sent: u64,
    /// Deliveries to its receivers a perfect relay would make.
    pub expected: u64,
    /// Distinct deliveries its receivers had before the drain ended.
    pub delivered: u64,
    /// Deliveries of a message the member already had.
    pub duplicates: u64,
    /// Acks its senders had.
    pub acks: u64,
    /// `error` events its members had.
    pub refused: u64,
    /// Arrivals from earlier runs.
    pub stale: u64,
    /// Presence events and notices.
    pub notices: u64,
    /// Anything else.
    pub other: u64,
    /// Latency of its receivers' distinct deliveries, in nanoseconds.
    pub latency: Histogram<u64>,
    /// The same split by the sender's transport (indexed as [`Transport::ALL`]).
    pub latency_by_sender: [Histogram<u64>; 2],
}

/// The figures of one load run.
#[derive(Debug, Clone)]
pub struct LoadOutcome {
    /// The offered aggregate rate.
    pub offered_rate: f64,
    /// Messages the schedule called for.
    pub planned: u64,
    /// Messages actually handed to the kernel.
    pub sent: u64,
    /// Sends the kernel refused.
    pub send_errors: u64,
    /// From the first to the last send.
    pub send_elapsed: Duration,
    /// Deliveries a perfect relay would make for what was sent.
    pub expected: u64,
    /// Distinct deliveries that arrived before the drain ended.
    pub delivered: u64,
    /// Deliveries of a message a member already had.
    pub duplicates: u64,
    /// Version-2 acks of this run's messages that reached their senders.
    pub acks: u64,
    /// Version-2 `error` events: messages the server refused (flood control, size).
    pub refused: u64,
    /// Datagrams from an earlier run.
    pub stale: u64,
    /// `*` notices, room-closed signals and version-2 presence events (joins, pongs, ...)
    /// seen during the run.
    pub notices: u64,
    /// Anything else (foreign sources, undecodable datagrams).
    pub other: u64,
    /// Send-to-receive latency of distinct deliveries, in nanoseconds.
    pub latency: Histogram<u64>,
    /// CPU time of the relay during the run, when measurable.
    pub relay_cpu: Option<Duration>,
    /// CPU time of the load generator (this process less an in-process relay thread): on a
    /// small machine it competes with the relay for the same cores.
    pub generator_cpu: Option<Duration>,
    /// The same figures per transport that has members, UDP first.
    pub parts: Vec<LoadPart>,
}

impl LoadOutcome {
    /// The run as one transport saw it: its senders' messages and acks, its receivers'
    /// deliveries and latency. Server CPU cannot be split by transport, so it is left out.
    pub fn part(&self, transport: Transport) -> Option<Self> {
        let part = self.parts.iter().find(|part| part.transport == transport)?;
        let senders: usize = self.parts.iter().map(|part| part.senders).sum();
        Some(Self {
            // Message k leaves from sender k mod S: each transport offers its senders' share.
            offered_rate: self.offered_rate * part.senders as f64 / senders.max(1) as f64,
            planned: self.planned,
            sent: part.sent,
            send_errors: 0,
            send_elapsed: self.send_elapsed,
            expected: part.expected,
            delivered: part.delivered,
            duplicates: part.duplicates,
            acks: part.acks,
            refused: part.refused,
            stale: part.stale,
            notices: part.notices,
            other: part.other,
            latency: part.latency.clone(),
            relay_cpu: None,
            generator_cpu: None,
            parts: Vec::new(),
        })
    }

    /// Messages actually sent per second.
    pub fn sent_per_second(&self) -> f64 {
        per_second(self.sent, self.send_elapsed)
    }

    /// Distinct deliveries per second over the sending period.
    pub fn delivered_per_second(&self) -> f64 {
        per_second(self.delivered, self.send_elapsed)
    }

    /// Acked messages as a percentage of the sent ones.
    pub fn acked_percent(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.acks as f64 * 100.0 / self.sent as f64
    }

    /// Missing deliveries as a percentage of the expected ones.
    pub fn loss_percent(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        self.expected.saturating_sub(self.delivered) as f64 * 100.0 / self.expected as f64
    }

    /// A latency quantile in microseconds, `None` when nothing was delivered.
    pub fn latency_us(&self, quantile: f64) -> Option<f64> {
        (!self.latency.is_empty())
            .then(|| self.latency.value_at_quantile(quantile) as f64 / 1_000.0)
    }

    /// The largest latency in microseconds.
    pub fn latency_max_us(&self) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.max() as f64 / 1_000.0)
    }

    /// Relay CPU seconds per million distinct deliveries.
    pub fn cpu_seconds_per_million(&self) -> Option<f64> {
        let cpu = self.relay_cpu?;
        (self.delivered > 0).then(|| cpu.as_secs_f64() * 1_000_000.0 / self.delivered as f64)
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// A fresh latency histogram.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NANOS, 3)
        .expect("constant histogram bounds are valid")
}

/// Runs one paced load against `fabric` and measures it.
pub fn run_load(fabric: &Fabric<'_>, spec: &LoadSpec) -> Result<LoadOutcome> {
    if fabric.senders.is_empty() || !spec.rate.is_finite() || spec.rate <= 0.0 {
        return Err(BenchError::InvalidArguments(
            "a load run needs at least one sender and a positive rate".to_owned(),
        ));
    }
    if fabric.ws.is_some() && fabric.protocol != Protocol::V2 {
        return Err(BenchError::InvalidArguments(
            "WebSocket members speak version 2 only".to_owned(),
        ));
    }
    if let Some(&index) = fabric
        .senders
        .iter()
        .find(|&&index| fabric.sender(index).is_none())
    {
        return Err(BenchError::InvalidArguments(format!(
            "sender {index} is not a member of the run"
        )));
    }
    let planned = ((spec.rate * spec.duration.as_secs_f64()).ceil() as u64)
        .clamp(1, spec.max_messages.max(1));
    let sender_count = fabric.senders.len() as u64;
    let leftovers = quiesce(fabric.members, QUIESCE_LIMIT)?
        + fabric.ws.map_or(0, |ws| ws.quiesce(QUIESCE_LIMIT));
    if leftovers > 0 {
        tracing::debug!(leftovers, "drained the relay's backlog before the run");
    }
    let population = Population::of(fabric);
    let receivers = ReceiverSet::new(fabric.members, spec.receiver_threads)?;
    let own_process = CpuSource::Process(std::process::id());
    let stop = AtomicBool::new(false);
    let delivered_so_far = AtomicU64::new(0);
    let acks_so_far = AtomicU64::new(0);
    // Acks below a member's first seq of this run belong to an earlier run.
    let first_seqs: Vec<u64> = fabric
        .members
        .iter()
        .map(Member::next_v2_seq)
        .chain(fabric.ws_members().iter().map(WsMember::next_v2_seq))
        .collect();
    let sender_transports: Vec<Transport> = fabric
        .senders
        .iter()
        .map(|&index| {
            fabric
                .sender(index)
                .map_or(Transport::Udp, Sender::transport)
        })
        .collect();
    let base = Instant::now();
    let context = ReceiveContext {
        members: fabric.members,
        relay: fabric.relay,
        member_relays: fabric.member_relays,
        run_id: spec.run_id,
        per_sender_capacity: planned.div_ceil(sender_count),
        sender_count,
        base,
        stop: &stop,
        delivered_so_far: &delivered_so_far,
        first_seqs: &first_seqs,
        acks_so_far: &acks_so_far,
        sender_transports: &sender_transports,
    };

    // Every arrival of the WebSocket members goes to one tally thread until the run ends.
    let ws_arrivals = fabric.ws.map(|ws| {
        let (sink, arrivals) = mpsc::channel();
        ws.record_into(sink);
        arrivals
    });
    let _stop_recording = StopRecording(fabric.ws);
    let result = std::thread::scope(|scope| {
        let ws_handle = ws_arrivals.map(|arrivals| {
            let context = &context;
            let first_member = fabric.members.len();
            std::thread::Builder::new()
                .name("bench-ws-tally".to_owned())
                .spawn_scoped(scope, move || tally_ws(&arrivals, first_member, context))
                .map_err(BenchError::socket("starting the WebSocket tally thread"))
        });
        let handles: Vec<_> = receivers
            .groups
            .into_iter()
            .enumerate()
            .map(|(index, group)| {
                let context = &context;
                std::thread::Builder::new()
                    .name(format!("bench-recv-{index}"))
                    .spawn_scoped(scope, move || group.run(context))
                    .map_err(BenchError::socket("starting a receiver thread"))
            })
            .collect();
        // Raised however this closure ends, a panic included, so the receivers always exit
        // and the scope can join them.
        let raise_stop = RaiseOnDrop(&stop);
        let pacing = (|| {
            let own_before = own_process.cpu_time()?;
            let cpu_before = fabric.cpu.cpu_time()?;
            let sent = pace(fabric, &population, spec, planned, base)?;
            let drain_deadline = Instant::now() + spec.drain;
            let acks_expected = if fabric.protocol.has_acks() {
                sent.sent
            } else {
                0
            };
            while Instant::now() < drain_deadline
                && (delivered_so_far.load(Ordering::Relaxed) < sent.expected
                    || acks_so_far.load(Ordering::Relaxed) < acks_expected)
            {
                std::thread::sleep(DRAIN_CHECK);
            }
            let cpu_after = fabric.cpu.cpu_time()?;
            let own_after = own_process.cpu_time()?;
            let relay_cpu = cpu_before
                .zip(cpu_after)
                .map(|(before, after)| after.saturating_sub(before));
            let mut generator_cpu = own_before
                .zip(own_after)
                .map(|(before, after)| after.saturating_sub(before));
            if let (CpuSource::OwnThread(_), Some(relay), Some(generator)) =
                (fabric.cpu, relay_cpu, generator_cpu.as_mut())
            {
                *generator = generator.saturating_sub(relay);
            }
            Ok::<_, BenchError>((sent, relay_cpu, generator_cpu))
        })();
        drop(raise_stop);
        let mut udp_tally = Tally::new(0);
        for handle in handles {
            let handle = handle?;
            let part = handle.join().map_err(|p| BenchError::from_panic(&*p))??;
            udp_tally.merge(part)?;
        }
        let ws_tally = match ws_handle {
            Some(handle) => Some(handle?.join().map_err(|p| BenchError::from_panic(&*p))?),
            None => None,
        };
        let (sent, relay_cpu, generator_cpu) = pacing?;
        Ok::<_, BenchError>((sent, relay_cpu, generator_cpu, udp_tally, ws_tally))
    });
    for member in fabric.members {
        // The receivers' clones shared the open file, so this undoes their non-blocking mode.
        member
            .socket
            .set_nonblocking(false)
            .map_err(BenchError::socket("restoring blocking mode"))?;
    }
    let (sent, relay_cpu, generator_cpu, udp_tally, ws_tally) = result?;
    let mut parts = Vec::with_capacity(2);
    for (transport, tally) in [
        (Transport::Udp, Some(&udp_tally)),
        (Transport::Ws, ws_tally.as_ref()),
    ] {
        let receivers = population.members[transport.slot()];
        if let Some(tally) = tally.filter(|_| receivers > 0) {
            parts.push(LoadPart {
                transport,
                receivers,
                senders: population.senders[transport.slot()],
                sent: sent.per_transport[transport.slot()].sent,
                expected: sent.per_transport[transport.slot()].expected,
                delivered: tally.delivered,
                duplicates: tally.duplicates,
                acks: tally.acks,
                refused: tally.refused,
                stale: tally.stale,
                notices: tally.notices,
                other: tally.other,
                latency: tally.latency.clone(),
                latency_by_sender: tally.by_sender.clone(),
            });
        }
    }
    let mut tally = udp_tally;
    if let Some(ws_tally) = ws_tally {
        tally.merge(ws_tally)?;
    }
    // Equal counts mean whole messages were lost before fan-out; uneven ones point at
    // particular receivers.
    tracing::debug!(run = spec.run_id, per_member = ?tally.per_member, "deliveries per member");
    Ok(LoadOutcome {
        offered_rate: spec.rate,
        planned,
        sent: sent.sent,
        send_errors: sent.errors,
        send_elapsed: sent.elapsed,
        expected: sent.expected,
        delivered: tally.delivered,
        duplicates: tally.duplicates,
        acks: tally.acks,
        refused: tally.refused,
        stale: tally.stale,
        notices: tally.notices,
        other: tally.other,
        latency: tally.latency,
        relay_cpu,
        generator_cpu,
        parts,
    })
}

/// Stops the WebSocket members' recording when dropped, however the run ends.
struct StopRecording<'a>(Option<&'a WsFleet>);

impl Drop for StopRecording<'_> {
    fn drop(&mut self) {
        if let Some(ws) = self.0 {
            ws.stop_recording();
        }
    }
}

/// One member that sends, whichever its transport.
#[derive(Clone, Copy)]
enum Sender<'a> {
    Udp(&'a Member),
    Ws(&'a WsMember),
}

impl Sender<'_> {
    fn transport(self) -> Transport {
        match self {
            Self::Udp(_) => Transport::Udp,
            Self::Ws(_) => Transport::Ws,
        }
    }

    fn room_index(self) -> usize {
        match self {
            Self::Udp(member) => member.room_index,
            Self::Ws(member) => member.room_index,
        }
    }
}

impl Fabric<'_> {
    /// The WebSocket members, none without a fleet.
    fn ws_members(&self) -> &[WsMember] {
        self.ws.map_or(&[], WsFleet::members)
    }

    /// The member with sender index `index`.
    /// Where member `index` sends, and what it hears from.
    fn relay_of(&self, index: usize) -> SocketAddr {
        self.member_relays
            .and_then(|relays| relays.get(index).copied())
            .unwrap_or(self.relay)
    }

    fn sender(&self, index: usize) -> Option<Sender<'_>> {
        match index.checked_sub(self.members.len()) {
            None => self.members.get(index).map(Sender::Udp),
            Some(ws_index) => self.ws_members().get(ws_index).map(Sender::Ws),
        }
    }
}

/// Who is where: members per room and transport, and senders per transport.
struct Population {
    /// `[transport][room]`: members.
    in_room: [Vec<usize>; 2],
    /// Members per transport.
    members: [usize; 2],
    /// Senders per transport.
    senders: [usize; 2],
}

impl Population {
    fn of(fabric: &Fabric<'_>) -> Self {
        let mut population = Self {
            in_room: [Vec::new(), Vec::new()],
            members: [fabric.members.len(), fabric.ws_members().len()],
            senders: [0, 0],
        };
        let rooms = fabric
            .members
            .iter()
            .map(|member| (Transport::Udp, member.room_index))
            .chain(
                fabric
                    .ws_members()
                    .iter()
                    .map(|member| (Transport::Ws, member.room_index)),
            );
        for (transport, room) in rooms {
            let counts = &mut population.in_room[transport.slot()];
            if counts.len() <= room {
                counts.resize(room + 1, 0);
            }
            counts[room] += 1;
        }
        for sender in fabric
            .senders
            .iter()
            .filter_map(|&index| fabric.sender(index))
        {
            population.senders[sender.transport().slot()] += 1;
        }
        population
    }

    /// Deliveries one message from `sender` owes each transport's receivers: its room's
    /// members there, less the sender itself.
    fn owed(&self, sender: Sender<'_>) -> [u64; 2] {
        let room = sender.room_index();
        Transport::ALL.map(|transport| {
            let members = self.in_room[transport.slot()]
                .get(room)
                .copied()
                .unwrap_or(0);
            let own = usize::from(transport == sender.transport());
            members.saturating_sub(own) as u64
        })
    }
}

/// Tallies the WebSocket members' arrivals until the run stops, then those still queued that
/// the connection tasks had read before it stopped: the queue between them and this thread
/// is the tool's, not the server's, so what waits in it is not lost.
fn tally_ws(
    arrivals: &mpsc::Receiver<WsArrival>,
    first_member: usize,
    context: &ReceiveContext<'_>,
) -> Tally {
    let mut tally = Tally::new(context.per_sender_capacity);
    let record = |tally: &mut Tally, arrival: WsArrival| {
        if tally.record_ws(&arrival, first_member + arrival.member, context) {
            context.delivered_so_far.fetch_add(1, Ordering::Relaxed);
        }
    };
    while !context.stop.load(Ordering::Relaxed) {
        match arrivals.recv_timeout(RECEIVE_POLL) {
            Ok(arrival) => record(&mut tally, arrival),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return tally,
        }
    }
    let stopped = Instant::now();
    for _ in 0..MAX_QUEUED_AFTER_STOP {
        match arrivals.try_recv() {
            Ok(arrival) if arrival.at <= stopped => record(&mut tally, arrival),
            Ok(_) | Err(_) => break,
        }
    }
    tally
}

/// Sets the flag when dropped.
struct RaiseOnDrop<'a>(&'a AtomicBool);

impl Drop for RaiseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

struct Sent {
    sent: u64,
    errors: u64,
    expected: u64,
    elapsed: Duration,
    /// Per transport, by the sender's for `sent` and by the receivers' for `expected`.
    per_transport: [TransportSent; 2],
}

#[derive(Debug, Clone, Copy, Default)]
struct TransportSent {
    sent: u64,
    expected: u64,
}

/// Sends on the absolute schedule. Stops at the planned count or when it is so far behind
/// that it would run past the planned end by more than the grace period.
fn pace(
    fabric: &Fabric<'_>,
    population: &Population,
    spec: &LoadSpec,
    planned: u64,
    base: Instant,
) -> Result<Sent> {
    let interval_nanos = 1e9 / spec.rate;
    let start = Instant::now();
    let hard_end = start + spec.duration + SEND_GRACE;
    let mut buf = Vec::with_capacity(MAX_DATAGRAM);
    let mut plain = Vec::with_capacity(MAX_DATAGRAM);
    let mut payload = Vec::with_capacity(spec.payload_len.max(64));
    let mut sent = Sent {
        sent: 0,
        errors: 0,
        expected: 0,
        elapsed: Duration::ZERO,
        per_transport: [TransportSent::default(); 2],
    };
    let mut last_send = start;
    for seq in 0..planned {
        let due = start + Duration::from_nanos((seq as f64 * interval_nanos) as u64);
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        } else if now > hard_end {
            tracing::debug!(
                seq,
                planned,
                "the pacer fell behind; stopping at the hard end"
            );
            break;
        }
        let sender_index = fabric.senders[(seq % fabric.senders.len() as u64) as usize];
        let relay = fabric.relay_of(sender_index);
        // Every sender index was checked before the run.
        let Some(sender) = fabric.sender(sender_index) else {
            sent.errors += 1;
            continue;
        };
        payload.clear();
        let sent_nanos = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        write_payload(
            Stamp {
                run: spec.run_id,
                seq,
                sent_nanos,
            },
            spec.payload_len,
            &mut payload,
        );
        // The payload is ASCII by construction.
        let text = std::str::from_utf8(&payload).unwrap_or_default();
        let delivered = match sender {
            Sender::Udp(member) => {
                buf.clear();
                let v2_seq = match fabric.protocol {
                    Protocol::V1 => {
                        member.frame_into(&payload, &mut buf);
                        None
                    }
                    Protocol::V2 => {
                        let seq = member.next_v2_seq();
                        buf.extend_from_slice(&member.envelope);
                        append_v2_chat(seq, text, &mut buf);
                        Some(seq)
                    }
                    // The same message as version 2, sealed (no envelope: the key id says
                    // who sends).
                    Protocol::V3 | Protocol::V3Tunnel => {
                        let seq = member.next_v2_seq();
                        plain.clear();
                        append_v2_chat(seq, text, &mut plain);
                        Some(seq)
                    }
                };
                let sent = match member.sealing() {
                    None => send_with_retry(&member.socket, &buf, relay),
                    Some(sealing) => {
                        sealing.seal(&plain, &mut buf).is_ok()
                            && sealing.send(&member.socket, relay, &buf)
                    }
                };
                if let (true, Some(seq)) = (sent, v2_seq) {
                    member.v2_seq_sent(seq);
                    member.last_send().touch();
                }
                sent
            }
            Sender::Ws(member) => {
                let seq = member.next_v2_seq();
                let mut json = Vec::with_capacity(text.len() + 48);
                append_v2_chat_json(seq, text, &mut json);
                let queued = String::from_utf8(json).is_ok_and(|json| member.send_text(json));
                if queued {
                    member.v2_seq_sent(seq);
                }
                queued
            }
        };
        if delivered {
            sent.sent += 1;
            sent.per_transport[sender.transport().slot()].sent += 1;
            for (slot, owed) in population.owed(sender).into_iter().enumerate() {
                sent.expected += owed;
                sent.per_transport[slot].expected += owed;
            }
        } else {
            sent.errors += 1;
        }
        last_send = Instant::now();
    }
    // The last message owns one interval of the schedule, so a perfectly paced run of
    // `duration` reports exactly `duration`.
    if sent.sent > 0 {
        sent.elapsed =
            last_send.duration_since(start) + Duration::from_nanos(interval_nanos as u64);
    }
    Ok(sent)
}

/// The receivers put the shared socket in non-blocking mode, so a full send buffer shows
/// up as `WouldBlock`; the pacer retries briefly rather than dropping the message itself.
pub fn send_with_retry(socket: &std::net::UdpSocket, datagram: &[u8], relay: SocketAddr) -> bool {
    for _ in 0..SEND_RETRIES {
        match socket.send_to(datagram, relay) {
            Ok(_) => return true,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                std::thread::yield_now();
            }
            Err(e) => {
                tracing::debug!(error = %e, "send failed");
                return false;
            }
        }
    }
    false
}

struct ReceiveContext<'a> {
    /// The UDP members, by index (version 3 opens their datagrams with their keys).
    members: &'a [Member],
    relay: SocketAddr,
    /// Scale-out: each member's own node, by member index.
    member_relays: Option<&'a [SocketAddr]>,
    run_id: u32,
    per_sender_capacity: u64,
    sender_count: u64,
    base: Instant,
    stop: &'a AtomicBool,
    delivered_so_far: &'a AtomicU64,
    /// Per member, the first version-2 seq it sends in this run.
    first_seqs: &'a [u64],
    acks_so_far: &'a AtomicU64,
    /// The transport of each sender, by its position in the run's senders.
    sender_transports: &'a [Transport],
}

/// Member sockets dealt round-robin to a few receiver threads.
struct ReceiverSet {
    groups: Vec<ReceiverGroup>,
}

/// One receiver thread's share: a poller and `(member index, source)` pairs whose position is
/// the poll token, with a replay window per source for version 3.
struct ReceiverGroup {
    poll: Poll,
    sockets: Vec<(usize, Source)>,
    windows: Vec<ReplayWindow>,
}

/// Where a member's datagrams arrive.
enum Source {
    /// Its UDP socket (a clone).
    Udp(mio::net::UdpSocket),
    /// Its tunnel: a clone of the TLS connection's socket, for readiness only; the tunnel
    /// itself reads, through rustls.
    Tunnel(mio::net::TcpStream),
}

impl ReceiverSet {
    fn new(members: &[Member], threads: usize) -> Result<Self> {
        let threads = threads.clamp(1, members.len().max(1));
        let mut groups = Vec::with_capacity(threads);
        for _ in 0..threads {
            groups.push(ReceiverGroup {
                poll: Poll::new().map_err(BenchError::socket("creating a poller"))?,
                sockets: Vec::new(),
                windows: Vec::new(),
            });
        }
        for (member_index, member) in members.iter().enumerate() {
            let group = &mut groups[member_index % threads];
            if let Some(tunnel) = member.tunnel() {
                let clone = tunnel
                    .stream()
                    .try_clone()
                    .map_err(BenchError::socket("cloning a tunnel socket"))?;
                let mut stream = mio::net::TcpStream::from_std(clone);
                group
                    .poll
                    .registry()
                    .register(&mut stream, Token(group.sockets.len()), Interest::READABLE)
                    .map_err(BenchError::socket("registering a tunnel"))?;
                group.sockets.push((member_index, Source::Tunnel(stream)));
                group.windows.push(ReplayWindow::new());
                continue;
            }
            // A clone shares the member's address, which is what the relay sends to.
            let clone = member
                .socket
                .try_clone()
                .map_err(BenchError::socket("cloning a member socket"))?;
            clone
                .set_nonblocking(true)
                .map_err(BenchError::socket("making a member socket non-blocking"))?;
            let mut socket = mio::net::UdpSocket::from_std(clone);
            group
                .poll
                .registry()
                .register(&mut socket, Token(group.sockets.len()), Interest::READABLE)
                .map_err(BenchError::socket("registering a member socket"))?;
            group.sockets.push((member_index, Source::Udp(socket)));
            group.windows.push(ReplayWindow::new());
        }
        Ok(Self { groups })
    }
}

impl ReceiverGroup {
    fn run(mut self, context: &ReceiveContext<'_>) -> Result<Tally> {
        let mut tally = Tally::new(context.per_sender_capacity);
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        // Sockets whose turn ended with data still queued. Readiness is edge-triggered, so
        // they are revisited before the poller may sleep again.
        let mut pending: Vec<usize> = Vec::new();
        let mut ready: Vec<usize> = Vec::new();
        while !context.stop.load(Ordering::Relaxed) {
            let timeout = if pending.is_empty() {
                RECEIVE_POLL
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(BenchError::socket("polling member sockets")(e)),
            }
            ready.clear();
            ready.append(&mut pending);
            ready.extend(events.iter().map(|event| event.token().0));
            ready.sort_unstable();
            ready.dedup();
            for &slot in &ready {
                let Some((member_index, source)) = self.sockets.get(slot) else {
                    continue;
                };
                let (member_index, window) = (*member_index, &mut self.windows[slot]);
                let sealing = context.members.get(member_index).and_then(Member::sealing);
                let socket = match source {
                    Source::Udp(socket) => socket,
                    Source::Tunnel(_) => {
                        let Some(tunnel) = sealing.and_then(|sealing| sealing.tunnel()) else {
                            continue;
                        };
                        let read = tunnel.read_datagrams(|datagram| {
                            let received_nanos = u64::try_from(context.base.elapsed().as_nanos())
                                .unwrap_or(u64::MAX);
                            let opened = sealing.and_then(|sealing| sealing.open(window, datagram));
                            let Some(message) = opened else {
                                tally.other += 1;
                                return;
                            };
                            let arrival = Arrival {
                                member: member_index,
                                datagram: message,
                                from: context.relay,
                                received_nanos,
                            };
                            if tally.record(&arrival, context) {
                                context.delivered_so_far.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                        match read {
                            Ok(TunnelRead::Exhausted) => {}
                            Ok(TunnelRead::More) => pending.push(slot),
                            Err(e) => {
                                // Not polled again: a broken tunnel would be ready forever.
                                tracing::warn!(member = member_index, error = %e, "tunnel broken");
                                tally.other += 1;
                                if let Source::Tunnel(stream) = &mut self.sockets[slot].1 {
                                    let _ = self.poll.registry().deregister(stream);
                                }
                            }
                        }
                        continue;
                    }
                };
                let mut exhausted = false;
                for _ in 0..READS_PER_TURN {
                    match socket.recv_from(&mut buf) {
                        Ok((len, from)) => {
                            let received_nanos = u64::try_from(context.base.elapsed().as_nanos())
                                .unwrap_or(u64::MAX);
                            let datagram = match sealing {
                                None => &buf[..len],
                                Some(sealing) => match sealing.open(window, &mut buf[..len]) {
                                    Some(message) => message,
                                    None => {
                                        tally.other += 1;
                                        continue;
                                    }
                                },
                            };
                            let arrival = Arrival {
                                member: member_index,
                                datagram,
                                from,
                                received_nanos,
                            };
                            if tally.record(&arrival, context) {
                                context.delivered_so_far.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            exhausted = true;
                            break;
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "receive error");
                            tally.other += 1;
                            exhausted = true;
                            break;
                        }
                    }
                }
                if !exhausted {
                    pending.push(slot);
                }
            }
        }
        Ok(tally)
    }
}

/// One datagram as a receiver saw it.
struct Arrival<'a> {
    member: usize,
    datagram: &'a [u8],
    from: SocketAddr,
    received_nanos: u64,
}

/// What one receiver thread counted.
struct Tally {
    per_sender_capacity: u64,
    /// Bitsets of sequence numbers seen, per (receiving member, sender position).
    seen: HashMap<(usize, u64), Vec<u64>>,
    delivered: u64,
    duplicates: u64,
    acks: u64,
    refused: u64,
    stale: u64,
    notices: u64,
    other: u64,
    latency: Histogram<u64>,
    per_member: HashMap<usize, u64>,
    /// `latency` split by the sender's transport.
    by_sender: [Histogram<u64>; 2],
}

impl Tally {
    fn new(per_sender_capacity: u64) -> Self {
        Self {
            per_sender_capacity,
            seen: HashMap::new(),
            delivered: 0,
            duplicates: 0,
            acks: 0,
            refused: 0,
            stale: 0,
            notices: 0,
            other: 0,
            latency: latency_histogram(),
            per_member: HashMap::new(),
            by_sender: [latency_histogram(), latency_histogram()],
        }
    }

    /// Counts one datagram; true when it is a new delivery of this run.
    fn record(&mut self, arrival: &Arrival<'_>, context: &ReceiveContext<'_>) -> bool {
        let relay = context
            .member_relays
            .and_then(|relays| relays.get(arrival.member).copied())
            .unwrap_or(context.relay);
        if arrival.from != relay {
            self.other += 1;
            return false;
        }
        let (member, received_nanos) = (arrival.member, arrival.received_nanos);
        match ServerDatagram::decode(arrival.datagram) {
            Ok(ServerDatagram::Chat { sender, .. }) if sender == NOTICE_SENDER => {
                self.notices += 1;
                false
            }
            Ok(ServerDatagram::Chat { text, .. }) => {
                self.record_chat(text, member, received_nanos, context)
            }
            Ok(ServerDatagram::V2(event)) => self.record_v2(event, member, received_nanos, context),
            Ok(ServerDatagram::RoomClosed) => {
                tracing::warn!(member, "room closed during the run");
                self.notices += 1;
                false
            }
            Err(_) => {
                self.other += 1;
                false
            }
        }
    }

    /// Counts one message a WebSocket member read; `member` is its index in the run. True
    /// when it is a new delivery of this run.
    fn record_ws(
        &mut self,
        arrival: &WsArrival,
        member: usize,
        context: &ReceiveContext<'_>,
    ) -> bool {
        let received_nanos = u64::try_from(
            arrival
                .at
                .saturating_duration_since(context.base)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX);
        match serde_json::from_str::<ServerV2>(arrival.text.as_str()) {
            Ok(event) => self.record_v2(event, member, received_nanos, context),
            Err(_) => {
                self.other += 1;
                false
            }
        }
    }

    /// Counts one version-2 event, from a datagram or a WebSocket; true when it is a new
    /// delivery of this run.
    fn record_v2(
        &mut self,
        event: ServerV2,
        member: usize,
        received_nanos: u64,
        context: &ReceiveContext<'_>,
    ) -> bool {
        match event {
            ServerV2::Msg(message) => {
                self.record_chat(&message.text, member, received_nanos, context)
            }
            ServerV2::Ack { seq, .. } => {
                let first = context.first_seqs.get(member).copied();
                if first.is_some_and(|first| seq >= first) {
                    self.acks += 1;
                    context.acks_so_far.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stale += 1;
                }
                false
            }
            ServerV2::Error { code, seq, .. } => {
                tracing::debug!(member, ?code, ?seq, "message refused");
                self.refused += 1;
                false
            }
            ServerV2::RoomClosed { .. } => {
                tracing::warn!(member, "room closed during the run");
                self.notices += 1;
                false
            }
            // Joins, leaves, pongs, typing, member lists: presence, not chat.
            _ => {
                self.notices += 1;
                false
            }
        }
    }

    /// Counts one chat text (a version-1 frame's or a version-2 `msg` event's); true when it
    /// is a new delivery of this run.
    fn record_chat(
        &mut self,
        text: &str,
        member: usize,
        received_nanos: u64,
        context: &ReceiveContext<'_>,
    ) -> bool {
        let Some(stamp) = parse_payload(text) else {
            self.other += 1;
            return false;
        };
        if stamp.run != context.run_id {
            self.stale += 1;
            return false;
        }
        let position = stamp.seq % context.sender_count;
        let local = stamp.seq / context.sender_count;
        if local >= self.per_sender_capacity {
            self.other += 1;
            return false;
        }
        let words = self.per_sender_capacity.div_ceil(64) as usize;
        let bits = match self.seen.entry((member, position)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(vec![0u64; words]),
        };
        let (word, bit) = ((local / 64) as usize, 1u64 << (local % 64));
        if bits[word] & bit != 0 {
            self.duplicates += 1;
            return false;
        }
        bits[word] |= bit;
        self.delivered += 1;
        *self.per_member.entry(member).or_default() += 1;
        let latency = received_nanos.saturating_sub(stamp.sent_nanos);
        self.latency.saturating_record(latency);
        let from = context
            .sender_transports
            .get(position as usize)
            .copied()
            .unwrap_or(Transport::Udp);
        self.by_sender[from.slot()].saturating_record(latency);
        true
    }

    fn merge(&mut self, other: Tally) -> Result<()> {
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.acks += other.acks;
        self.refused += other.refused;
        self.stale += other.stale;
        self.notices += other.notices;
        self.other += other.other;
        for (member, count) in other.per_member {
            *self.per_member.entry(member).or_default() += count;
        }
        let failed = |e| BenchError::ThreadPanicked(format!("histogram merge failed: {e:?}"));
        for (ours, theirs) in self.by_sender.iter_mut().zip(&other.by_sender) {
            ours.add(theirs).map_err(failed)?;
        }
        self.latency.add(&other.latency).map_err(failed)
    }
}
