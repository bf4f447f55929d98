//! The HTTP listener as a client sees it: JSON requests with [`Api`], WebSocket members with
//! [`WebMember`]. Both are blocking, with the same generous timeouts as everything else here.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::CloseFrame;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::EVENT_TIMEOUT;
use crate::server::ServerProcess;

/// The JSON API of one server.
pub struct Api {
    base: String,
    agent: ureq::Agent,
}

/// An answer: its status and its JSON body (`Null` when it has none).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body, parsed.
    pub body: Value,
}

impl Answer {
    /// The `error` code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

impl Api {
    /// The API of `server` (which must serve HTTP).
    pub fn of(server: &ServerProcess) -> Self {
        Self::at(server.http.expect("the server serves HTTP"))
    }

    /// The API at `addr`.
    pub fn at(addr: SocketAddr) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(EVENT_TIMEOUT * 2))
            .build()
            .into();
        Self {
            base: format!("http://{addr}"),
            agent,
        }
    }

    /// `GET path`, with a bearer token if given.
    pub fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        answer(request.call())
    }

    /// `GET path`, as text.
    pub fn get_text(&self, path: &str) -> (u16, String) {
        let mut response = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .expect("the HTTP request completes");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, text)
    }

    /// `POST path` with a JSON body, with a bearer token if given.
    pub fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Answer {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        answer(request.send_json(body))
    }

    /// `POST path` with raw bytes as a JSON body.
    pub fn post_raw(&self, path: &str, body: &[u8]) -> Answer {
        answer(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("Content-Type", "application/json")
                .send(body),
        )
    }

    /// `POST path` with raw bytes and a bearer token.
    pub fn upload(&self, path: &str, bytes: &[u8], token: &str) -> Answer {
        answer(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {token}"))
                .header("Content-Type", "application/octet-stream")
                .send(bytes),
        )
    }

    /// `GET path` with a bearer token, as bytes, with the `x-content-sha256` header.
    pub fn download(&self, path: &str, token: &str) -> (u16, Vec<u8>, Option<String>) {
        let mut response = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .expect("the HTTP request completes");
        let status = response.status().as_u16();
        let sha256 = response
            .headers()
            .get("x-content-sha256")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap_or_default();
        (status, bytes, sha256)
    }

    /// `DELETE path` with a bearer token.
    pub fn delete(&self, path: &str, token: &str) -> Answer {
        answer(
            self.agent
                .delete(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {token}"))
                .call(),
        )
    }

    /// Creates `room` as `username` and returns the token.
    pub fn create(&self, room: &str, username: &str) -> String {
        let answer = self.post(
            "/api/rooms",
            &json!({"room": room, "username": username}),
            None,
        );
        assert_eq!(answer.status, 201, "create {room}: {answer:?}");
        token_of(&answer)
    }

    /// Joins `room` as `username` and returns the token.
    pub fn join(&self, room: &str, username: &str) -> String {
        let answer = self.post(
            &format!("/api/rooms/{room}/join"),
            &json!({"username": username}),
            None,
        );
        assert_eq!(answer.status, 200, "join {room}: {answer:?}");
        token_of(&answer)
    }
}

fn token_of(answer: &Answer) -> String {
    answer.body["token"]
        .as_str()
        .expect("a grant has a token")
        .to_owned()
}

fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut response = result.expect("the HTTP request completes");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, body }
}

/// A member connected through the WebSocket gateway.
pub struct WebMember {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    /// Every event received so far, in order.
    pub events: Vec<Value>,
    /// The next `seq` to send.
    next_seq: u64,
}

/// How a WebSocket upgrade went when it was refused.
#[derive(Debug)]
pub struct Refused {
    /// The HTTP status of the refusal.
    pub status: u16,
}

impl WebMember {
    /// Opens `/ws` on `http` and registers with `token` in `room`, after `last_id` if given.
    pub fn connect(http: SocketAddr, room: &str, token: &str, last_id: Option<u64>) -> Self {
        let mut member = Self::open(http, None).expect("the WebSocket upgrade succeeds");
        let mut register = json!({"t": "register", "room": room, "token": token});
        if let Some(last_id) = last_id {
            register["last_id"] = json!(last_id);
        }
        member.send(&register);
        member
    }

    /// Opens `/ws` on `http` with an `Origin` header if given, without registering.
    pub fn open(http: SocketAddr, origin: Option<&str>) -> Result<Self, Refused> {
        let mut request = format!("ws://{http}/ws")
            .into_client_request()
            .expect("a WebSocket request");
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", origin.parse().expect("an origin header"));
        }
        match tungstenite::connect(request) {
            Ok((socket, _)) => {
                if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
                    stream
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .expect("a read timeout");
                }
                Ok(Self {
                    socket,
                    events: Vec::new(),
                    next_seq: 1,
                })
            }
            Err(tungstenite::Error::Http(response)) => Err(Refused {
                status: response.status().as_u16(),
            }),
            Err(error) => panic!("the WebSocket upgrade failed: {error}"),
        }
    }

    /// Sends one JSON message.
    pub fn send(&mut self, message: &Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .expect("send on the WebSocket");
    }

    /// Sends chat with the next `seq`; returns the `seq`.
    pub fn say(&mut self, text: &str) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.send(&json!({"t": "msg", "seq": seq, "text": text}));
        seq
    }

    /// The next event, if one comes within `limit`; `Err` with the close frame (or none) once
    /// the connection is closed.
    pub fn next_event(&mut self, limit: Duration) -> Result<Option<Value>, Option<CloseFrame>> {
        let deadline = Instant::now() + limit;
        loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    let event: Value =
                        serde_json::from_str(text.as_str()).expect("events are JSON");
                    self.events.push(event.clone());
                    return Ok(Some(event));
                }
                Ok(Message::Close(frame)) => return Err(frame),
                Ok(_) => {}
                Err(tungstenite::Error::Io(error))
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                Err(_) => return Err(None),
            }
        }
    }

    /// Waits for an event that `wanted` accepts; panics after [`EVENT_TIMEOUT`].
    pub fn wait_for(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while Instant::now() < deadline {
            match self.next_event(deadline.saturating_duration_since(Instant::now())) {
                Ok(Some(event)) if wanted(&event) => return event,
                Ok(_) => {}
                Err(frame) => panic!(
                    "the WebSocket closed ({frame:?}) while waiting for {what}; events: {:?}",
                    self.events
                ),
            }
        }
        panic!(
            "no {what} within {EVENT_TIMEOUT:?}; events: {:?}",
            self.events
        );
    }

    /// Waits for the event of type `t`.
    pub fn wait_for_type(&mut self, t: &str) -> Value {
        self.wait_for(t, |event| event["t"] == t)
    }

    /// Waits for the connection to close; returns the close frame's code, if any.
    pub fn wait_closed(&mut self) -> Option<u16> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while Instant::now() < deadline {
            match self.next_event(Duration::from_millis(500)) {
                Ok(_) => {}
                Err(frame) => return frame.map(|frame| u16::from(frame.code)),
            }
        }
        panic!("the WebSocket did not close; events: {:?}", self.events);
    }

    /// Reads whatever arrives within `limit`.
    pub fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self
                .next_event(deadline.saturating_duration_since(Instant::now()))
                .is_err()
            {
                return;
            }
        }
    }

    /// The texts of the `msg` events received so far, by id.
    pub fn messages(&self) -> Vec<(u64, String)> {
        self.events
            .iter()
            .filter(|event| event["t"] == "msg")
            .map(|event| {
                (
                    event["id"].as_u64().unwrap_or_default(),
                    event["text"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}
