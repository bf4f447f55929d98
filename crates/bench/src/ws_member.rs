//! WebSocket members (docs/http-api.md): a token from the HTTP API, then `GET /ws`, whose
//! first text message is `{"t":"register","room":R,"token":T}`, answered like a version-2
//! register (`members`, replayed history, `pong`); from then on each WebSocket text message
//! is one version-2 JSON object, without the `0xFF` of the datagrams.
//!
//! A [`WsFleet`] owns a small tokio runtime and one task per connection. Each task reads
//! every message as soon as it arrives (the server disconnects a client whose queue of 256
//! pending messages fills), stamps it with an `Instant`, and hands it to whoever records the
//! current load run; outside runs it is only counted, so quiet can be waited for. The pacer
//! thread sends through an unbounded channel per member, so it never blocks on a socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use chat_protocol::v2::ServerV2;
use futures_util::SinkExt;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async};

use crate::error::{BenchError, Result};
use crate::http_client::{create_room, join_room};

/// How long one member's connect, upgrade and register may take.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long closing a connection may take when the fleet is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long dropping the fleet waits for its tasks.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// Silence the members must keep before a run may start.
const QUIET_PERIOD: Duration = Duration::from_millis(200);
/// How often quiet is checked.
const QUIET_CHECK: Duration = Duration::from_millis(50);
/// Silence after which a member pings, as a real client does: the server closes a
/// connection it has heard nothing from for a while, and its engine removes a silent member
/// after `--idle-timeout` (60 s by default). The same as the UDP members' keepalive.
const PING_AFTER: Duration = Duration::from_secs(15);
/// Messages read while registering before giving up: `members`, at most 256 replayed
/// messages, the joins of others, and the `pong`.
const REGISTER_MAX_MESSAGES: usize = 100_000;

/// One message a member received, as the task that read it stamped it.
#[derive(Debug)]
pub struct WsArrival {
    /// The member's index in the fleet.
    pub member: usize,
    /// When the task had it.
    pub at: Instant,
    /// The JSON text.
    pub text: Utf8Bytes,
}

/// A member to connect: its place in the layout and its token.
#[derive(Debug, Clone)]
pub struct WsSeat {
    /// The member's username.
    pub username: String,
    /// Index of its room in the layout.
    pub room_index: usize,
    /// The room's name.
    pub room: String,
    /// The token the HTTP API granted.
    pub token: String,
}

/// One connected WebSocket member as the pacer sees it.
#[derive(Debug)]
pub struct WsMember {
    /// Index of its room in the layout.
    pub room_index: usize,
    outgoing: UnboundedSender<String>,
    /// The last version-2 `seq` it sent (0: none yet).
    v2_seq: AtomicU64,
}

impl WsMember {
    /// The `seq` its next chat message carries.
    pub fn next_v2_seq(&self) -> u64 {
        self.v2_seq.load(Ordering::Relaxed) + 1
    }

    /// Records that the message with `seq` was handed to its connection.
    pub fn v2_seq_sent(&self, seq: u64) {
        self.v2_seq.store(seq, Ordering::Relaxed);
    }

    /// Queues one text message on its connection; false once the connection is gone.
    pub fn send_text(&self, text: String) -> bool {
        self.outgoing.send(text).is_ok()
    }
}

/// What the connection tasks share with the rest of the tool.
#[derive(Debug, Default)]
struct Shared {
    /// Where arrivals go while a run records them.
    sink: Mutex<Option<mpsc::Sender<WsArrival>>>,
    /// Messages received so far, recorded or not.
    arrivals: AtomicU64,
    /// Connections that ended (closed by the server, or an error).
    closed: AtomicUsize,
}

impl Shared {
    fn arrive(&self, arrival: WsArrival) {
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        let sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sink) = sink.as_ref() {
            // A run that stopped listening just does not count it.
            let _ = sink.send(arrival);
        }
    }
}

/// WebSocket members and the runtime that drives their connections. Dropping it closes
/// every connection and stops the runtime, waiting a bounded time.
#[derive(Debug)]
pub struct WsFleet {
    http: SocketAddr,
    ping_after: Duration,
    members: Vec<WsMember>,
    shared: Arc<Shared>,
    runtime: Option<Runtime>,
}

impl WsFleet {
    /// A fleet for the server whose HTTP listener is at `http`, driven by `threads` threads.
    pub fn new(http: SocketAddr, threads: usize) -> Result<Self> {
        Self::pinging_after(http, threads, PING_AFTER)
    }

    /// A fleet whose members ping after `ping_after` without sending.
    fn pinging_after(http: SocketAddr, threads: usize, ping_after: Duration) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("bench-ws")
            .enable_all()
            .build()
            .map_err(BenchError::socket("starting the WebSocket runtime"))?;
        Ok(Self {
            http,
            ping_after,
            members: Vec::new(),
            shared: Arc::new(Shared::default()),
            runtime: Some(runtime),
        })
    }

    fn runtime(&self) -> Result<&Runtime> {
        self.runtime
            .as_ref()
            .ok_or_else(|| BenchError::WebSocket("the runtime is gone".to_owned()))
    }

    /// The connected members, in the order they were connected.
    pub fn members(&self) -> &[WsMember] {
        &self.members
    }

    /// Connections the server (or an error) ended so far.
    pub fn closed(&self) -> usize {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Asks the HTTP API for a token per `(room, username, create)`, `concurrency` requests
    /// at a time, all before `deadline`. Creates are posted first, one by one, since the
    /// joins need their rooms. Tokens come back in the order asked.
    pub fn grant(
        &self,
        asks: &[(String, String, bool)],
        concurrency: usize,
        deadline: Instant,
    ) -> Result<Vec<String>> {
        let http = self.http;
        let deadline = tokio::time::Instant::from_std(deadline);
        self.runtime()?.block_on(async move {
            let mut tokens = vec![String::new(); asks.len()];
            for (index, (room, username, _)) in asks.iter().enumerate().filter(|(_, a)| a.2) {
                tokens[index] = create_room(http, room, username, deadline).await?;
            }
            let joins: Vec<(usize, String)> =
                stream::iter(asks.iter().enumerate().filter(|(_, ask)| !ask.2))
                    .map(|(index, (room, username, _))| async move {
                        join_room(http, room, username, deadline)
                            .await
                            .map(|token| (index, token))
                    })
                    .buffer_unordered(concurrency.max(1))
                    .try_collect()
                    .await?;
            for (index, token) in joins {
                tokens[index] = token;
            }
            Ok(tokens)
        })
    }

    /// Connects and registers every seat, `concurrency` at a time, all before `deadline`;
    /// each one then reads and writes on its own task. Fails at the first member that could
    /// not register; then none of this call's members joins the fleet (their connections
    /// close).
    pub fn connect(
        &mut self,
        seats: Vec<WsSeat>,
        concurrency: usize,
        deadline: Instant,
    ) -> Result<()> {
        let (http, ping_after) = (self.http, self.ping_after);
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| BenchError::WebSocket("the runtime is gone".to_owned()))?;
        let shared = Arc::clone(&self.shared);
        let first_index = self.members.len();
        let deadline = tokio::time::Instant::from_std(deadline);
        let connected: Result<Vec<WsMember>> = runtime.block_on(async move {
            stream::iter(seats.into_iter().enumerate())
                .map(|(offset, seat)| {
                    let shared = Arc::clone(&shared);
                    async move {
                        let stream = open(http, &seat, deadline).await?;
                        let (outgoing, queue) = unbounded_channel();
                        let member = first_index + offset;
                        tokio::spawn(drive(member, stream, queue, shared, ping_after));
                        Ok(WsMember {
                            room_index: seat.room_index,
                            outgoing,
                            v2_seq: AtomicU64::new(0),
                        })
                    }
                })
                .buffered(concurrency.max(1))
                .try_collect()
                .await
        });
        self.members.extend(connected?);
        Ok(())
    }

    /// Starts handing every arrival to `sink`.
    pub fn record_into(&self, sink: mpsc::Sender<WsArrival>) {
        *self
            .shared
            .sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(sink);
    }

    /// Stops handing arrivals on.
    pub fn stop_recording(&self) {
        *self
            .shared
            .sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Waits until nothing has arrived for 200 ms, or `limit` passed; returns how many
    /// messages arrived meanwhile (thrown away unless a run records them).
    pub fn quiesce(&self, limit: Duration) -> u64 {
        let started = Instant::now();
        let at_start = self.shared.arrivals.load(Ordering::Relaxed);
        let mut last_count = at_start;
        let mut quiet_since = Instant::now();
        while started.elapsed() < limit && quiet_since.elapsed() < QUIET_PERIOD {
            std::thread::sleep(QUIET_CHECK);
            let count = self.shared.arrivals.load(Ordering::Relaxed);
            if count != last_count {
                last_count = count;
                quiet_since = Instant::now();
            }
        }
        if quiet_since.elapsed() < QUIET_PERIOD {
            tracing::warn!(
                "the WebSocket members were still receiving when the quiet wait ran out"
            );
        }
        last_count - at_start
    }
}

impl Drop for WsFleet {
    fn drop(&mut self) {
        self.stop_recording();
        // Closing the queues tells every task to close its connection and end.
        self.members.clear();
        if let Some(runtime) = self.runtime.take() {
            let shared = Arc::clone(&self.shared);
            let started = Instant::now();
            runtime.block_on(async {
                while Arc::strong_count(&shared) > 2 && started.elapsed() < SHUTDOWN_TIMEOUT {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        }
    }
}

/// Connects one member, upgrades to a WebSocket and registers; returns once both the
/// `members` reply and the closing `pong` arrived.
async fn open(
    http: SocketAddr,
    seat: &WsSeat,
    deadline: tokio::time::Instant,
) -> Result<WebSocketStream<TcpStream>> {
    let deadline = deadline.min(tokio::time::Instant::now() + REGISTER_TIMEOUT);
    let fail = |what: String| BenchError::WebSocket(format!("member {}: {what}", seat.username));
    let late = || {
        fail(format!(
            "not registered within {} s",
            REGISTER_TIMEOUT.as_secs()
        ))
    };
    let socket = tokio::time::timeout_at(deadline, TcpStream::connect(http))
        .await
        .map_err(|_| late())?
        .map_err(|e| fail(format!("connecting to {http}: {e}")))?;
    socket
        .set_nodelay(true)
        .map_err(|e| fail(format!("setting TCP_NODELAY: {e}")))?;
    let (mut ws, _) =
        tokio::time::timeout_at(deadline, client_async(format!("ws://{http}/ws"), socket))
            .await
            .map_err(|_| late())?
            .map_err(|e| fail(format!("upgrading GET /ws: {e}")))?;
    let register = json!({"t": "register", "room": seat.room, "token": seat.token}).to_string();
    tokio::time::timeout_at(deadline, ws.send(Message::text(register)))
        .await
        .map_err(|_| late())?
        .map_err(|e| fail(format!("sending the register: {e}")))?;
    let (mut members, mut pong) = (false, false);
    for _ in 0..REGISTER_MAX_MESSAGES {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| late())?
            .ok_or_else(|| fail("the server closed the connection while registering".to_owned()))?
            .map_err(|e| fail(format!("reading the register answer: {e}")))?;
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                return Err(fail(format!("closed while registering: {frame:?}")));
            }
            _ => continue,
        };
        match serde_json::from_str::<ServerV2>(&text) {
            Ok(ServerV2::Members { .. }) => members = true,
            Ok(ServerV2::Pong { .. }) => pong = true,
            Ok(ServerV2::Error { code, message, .. }) => {
                return Err(fail(format!("register refused: {code:?} ({message})")));
            }
            Ok(ServerV2::RoomClosed { reason }) => {
                return Err(fail(format!(
                    "the room closed while registering: {reason:?}"
                )));
            }
            // Replayed history, others' joins.
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(member = %seat.username, error = %e, "an unreadable message while registering")
            }
        }
        if members && pong {
            return Ok(ws);
        }
    }
    Err(fail(format!(
        "no members and pong among the first {REGISTER_MAX_MESSAGES} messages"
    )))
}

/// One connection's life after registering: every message read is stamped and handed on;
/// every queued text is sent; after `ping_after` without sending, a `ping` (its `pong` is
/// counted as a notice). Ends when the server closes, on an error, or when the fleet drops
/// the queue (then it closes the connection itself).
async fn drive(
    member: usize,
    mut ws: WebSocketStream<TcpStream>,
    mut queue: UnboundedReceiver<String>,
    shared: Arc<Shared>,
    ping_after: Duration,
) {
    let ping = json!({"t": "ping"}).to_string();
    let mut last_send = tokio::time::Instant::now();
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => shared.arrive(WsArrival {
                    member,
                    at: Instant::now(),
                    text,
                }),
                Some(Ok(Message::Close(frame))) => {
                    tracing::warn!(member, ?frame, "the server closed a WebSocket");
                    break;
                }
                // Pings are answered by tungstenite itself; binary messages are not the API's.
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::warn!(member, %error, "a WebSocket failed");
                    break;
                }
                None => break,
            },
            outgoing = queue.recv() => match outgoing {
                Some(text) => {
                    last_send = tokio::time::Instant::now();
                    if let Err(error) = ws.send(Message::text(text)).await {
                        tracing::warn!(member, %error, "a WebSocket send failed");
                        break;
                    }
                }
                None => {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
                    break;
                }
            },
            () = tokio::time::sleep_until(last_send + ping_after) => {
                last_send = tokio::time::Instant::now();
                if let Err(error) = ws.send(Message::text(ping.clone())).await {
                    tracing::warn!(member, %error, "a WebSocket ping failed");
                    break;
                }
            }
        }
    }
    shared.closed.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A stand-in for the server's HTTP listener: `POST` gets a token named after the
    /// username; `GET /ws` registers (members, pong) and answers each `msg` with an ack and
    /// the message itself, as the room would relay it.
    async fn gateway(listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = [0u8; 4];
                if stream.peek(&mut head).await.is_err() {
                    return;
                }
                if &head == b"POST" {
                    http_grant(stream).await;
                } else {
                    websocket(stream).await;
                }
            });
        }
    }

    async fn http_grant(mut stream: TcpStream) {
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        // The test's requests are small: head and body arrive before the JSON closes.
        while !request.ends_with(b"}") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => request.extend_from_slice(&chunk[..read]),
            }
        }
        let text = String::from_utf8_lossy(&request);
        let body: Value =
            serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..]).unwrap();
        let (status, reply) = if text.starts_with("POST /api/rooms/lobby/join ") {
            (
                "200 OK",
                json!({"token": format!("t-{}", body["username"].as_str().unwrap())}),
            )
        } else if text.starts_with("POST /api/rooms ") && body["room"] == "lobby" {
            ("201 Created", json!({"token": "t-host"}))
        } else {
            (
                "404 Not Found",
                json!({"error": "room_not_found", "message": "no"}),
            )
        };
        let reply = reply.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
    }

    async fn websocket(stream: TcpStream) {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        let mut id = 0;
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let request: Value = serde_json::from_str(&text).unwrap();
            let replies = match request["t"].as_str() {
                Some("register")
                    if request["token"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("t-")) =>
                {
                    vec![
                        json!({"t": "joined", "name": "someone"}),
                        json!({"t": "members", "names": ["host"], "host": "host"}),
                        json!({"t": "pong", "id": 0}),
                    ]
                }
                Some("register") => vec![json!({"t": "error", "code": "no_room", "message": "no"})],
                Some("ping") => vec![json!({"t": "pong", "id": id})],
                Some("msg") => {
                    id += 1;
                    vec![
                        json!({"t": "ack", "seq": request["seq"], "id": id}),
                        json!({"t": "msg", "id": id, "from": "x", "text": request["text"], "ts": 1}),
                    ]
                }
                _ => Vec::new(),
            };
            for reply in replies {
                if ws.send(Message::text(reply.to_string())).await.is_err() {
                    return;
                }
            }
        }
    }

    #[test]
    fn a_silent_member_pings() {
        let server = tokio::runtime::Runtime::new().unwrap();
        let listener = server.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let http = listener.local_addr().unwrap();
        server.spawn(gateway(listener));
        let mut fleet = WsFleet::pinging_after(http, 1, Duration::from_millis(100)).unwrap();
        let seat = WsSeat {
            username: "w1".to_owned(),
            room_index: 0,
            room: "lobby".to_owned(),
            token: "t-w1".to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        fleet.connect(vec![seat], 1, deadline).unwrap();
        let (sink, arrivals) = mpsc::channel();
        fleet.record_into(sink);
        let arrival = arrivals.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            matches!(
                serde_json::from_str::<ServerV2>(arrival.text.as_str()),
                Ok(ServerV2::Pong { .. })
            ),
            "{:?}",
            arrival.text
        );
    }

    #[test]
    fn members_are_granted_connected_registered_and_heard() {
        let server = tokio::runtime::Runtime::new().unwrap();
        let listener = server.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let http = listener.local_addr().unwrap();
        server.spawn(gateway(listener));

        let mut fleet = WsFleet::new(http, 1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let asks = [
            ("lobby".to_owned(), "host".to_owned(), true),
            ("lobby".to_owned(), "w1".to_owned(), false),
            ("lobby".to_owned(), "w2".to_owned(), false),
        ];
        let tokens = fleet.grant(&asks, 2, deadline).unwrap();
        assert_eq!(tokens, ["t-host", "t-w1", "t-w2"], "in the order asked");
        let missing = [("nowhere".to_owned(), "w9".to_owned(), false)];
        let refused = fleet.grant(&missing, 1, deadline).unwrap_err();
        assert!(
            matches!(&refused, BenchError::Refused { code, .. } if code == "room_not_found"),
            "{refused}"
        );

        let seats = tokens
            .iter()
            .map(|token| WsSeat {
                username: token.clone(),
                room_index: 0,
                room: "lobby".to_owned(),
                token: token.clone(),
            })
            .collect();
        fleet.connect(seats, 2, deadline).unwrap();
        assert_eq!(fleet.members().len(), 3);
        // Nothing is recorded outside a run, but quiet is waited for.
        fleet.quiesce(Duration::from_secs(5));

        let (sink, arrivals) = mpsc::channel();
        fleet.record_into(sink);
        let member = &fleet.members()[1];
        assert_eq!(member.next_v2_seq(), 1);
        assert!(member.send_text(r#"{"t":"msg","seq":1,"text":"hello"}"#.to_owned()));
        member.v2_seq_sent(1);
        assert_eq!(member.next_v2_seq(), 2);
        let mut heard = Vec::new();
        while heard.len() < 2 {
            let arrival = arrivals.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(arrival.member, 1);
            heard.push(serde_json::from_str::<ServerV2>(arrival.text.as_str()).unwrap());
        }
        assert_eq!(heard[0], ServerV2::Ack { seq: 1, id: 1 });
        assert!(matches!(&heard[1], ServerV2::Msg(message) if message.text == "hello"));
        fleet.stop_recording();
        assert_eq!(fleet.closed(), 0);

        // A token the gateway does not know is refused at register.
        let stranger = WsSeat {
            username: "stranger".to_owned(),
            room_index: 0,
            room: "lobby".to_owned(),
            token: "bad".to_owned(),
        };
        let error = fleet.connect(vec![stranger], 1, deadline).unwrap_err();
        assert!(error.to_string().contains("NoRoom"), "{error}");
        let started = Instant::now();
        drop(fleet);
        assert!(
            started.elapsed() < SHUTDOWN_TIMEOUT * 3,
            "dropping is bounded"
        );
    }
}
