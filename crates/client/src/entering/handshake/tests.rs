use chat_protocol::limits::TCRP_HEADER_LEN;
use chat_protocol::tcrp::{Compliance, ErrorCode, to_json_payload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Generous enough never to fire on a slow machine, except where a test wants it to.
fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(10),
        exchange: Duration::from_secs(10),
    }
}

fn join_bob() -> Request {
    Request {
        operation: Operation::Join,
        room: "lobby".into(),
        user: UserRequest {
            username: "bob".into(),
            password: None,
        },
    }
}

fn reply(state: State, room: &str, payload: Vec<u8>) -> Vec<u8> {
    Frame::new(Operation::Join as u8, state, room, payload)
        .encode()
        .unwrap()
}

async fn read_request(stream: &mut TcpStream) -> Frame {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some((frame, _)) = Frame::decode(&buffer).unwrap() {
            return frame;
        }
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "client closed before sending a whole request");
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// A one-connection fake server on 127.0.0.1: it reads the request, lets `answer` write
/// whatever the test wants, and hands back the request for inspection.
async fn fake_server<F, Fut>(answer: F) -> (u16, JoinHandle<Frame>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let request = read_request(&mut stream).await;
        answer(stream).await;
        request
    });
    (port, task)
}

#[tokio::test]
async fn accepted_join_returns_the_grant() {
    let (port, server) = fake_server(|mut stream| async move {
        let grant = Grant {
            token: TOKEN.into(),
            room: Some("lobby".into()),
            username: Some("bob".into()),
            host: Some(false),
            udp_port: Some(9191),
            send_burst: Some(10),
            send_interval_ms: Some(200),
            http_port: None,
            key_id: None,
        };
        let mut bytes = reply(
            State::Compliance,
            "lobby",
            to_json_payload(&Compliance::accepted()),
        );
        bytes.extend(reply(State::Complete, "lobby", to_json_payload(&grant)));
        stream.write_all(&bytes).await.unwrap();
    })
    .await;

    let membership = perform("127.0.0.1", port, &join_bob(), timeouts())
        .await
        .unwrap();
    assert_eq!(membership.grant.token, TOKEN);
    assert_eq!(membership.grant.udp_port, Some(9191));
    assert_eq!(membership.grant.host, Some(false));
    assert_eq!(membership.server, SocketAddr::from(([127, 0, 0, 1], port)));

    let request = server.await.unwrap();
    assert_eq!(request.state, State::Request);
    assert_eq!(request.operation, Operation::Join as u8);
    assert_eq!(request.room_name, "lobby");
    assert_eq!(
        UserRequest::parse(&request.payload).unwrap(),
        join_bob().user
    );
    // The reference client's form: a JSON string.
    assert_eq!(request.payload, br#""bob""#);
}

#[tokio::test]
async fn replies_split_into_single_bytes_are_reassembled() {
    let (port, _server) = fake_server(|mut stream| async move {
        let grant = Grant {
            token: TOKEN.into(),
            room: Some("lobby".into()),
            username: Some("bob".into()),
            host: Some(true),
            udp_port: None,
            send_burst: None,
            send_interval_ms: None,
            http_port: None,
            key_id: None,
        };
        let mut bytes = reply(
            State::Compliance,
            "lobby",
            to_json_payload(&Compliance::accepted()),
        );
        bytes.extend(reply(State::Complete, "lobby", to_json_payload(&grant)));
        for byte in bytes {
            stream.write_all(&[byte]).await.unwrap();
            stream.flush().await.unwrap();
        }
    })
    .await;

    let membership = perform("127.0.0.1", port, &join_bob(), timeouts())
        .await
        .unwrap();
    assert_eq!(membership.grant.host, Some(true));
    assert_eq!(membership.grant.udp_port, None);
}

#[tokio::test]
async fn refusal_carries_the_servers_code_and_message() {
    let (port, _server) = fake_server(|mut stream| async move {
        let refusal = Compliance::refused(
            ErrorCode::NameTaken,
            "the name \"bob\" is taken in \"lobby\"",
        );
        let mut bytes = reply(State::Compliance, "lobby", to_json_payload(&refusal));
        bytes.extend(reply(
            State::Complete,
            "lobby",
            to_json_payload(&Grant::failed()),
        ));
        stream.write_all(&bytes).await.unwrap();
    })
    .await;

    let error = perform("127.0.0.1", port, &join_bob(), timeouts())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Refused { code, .. } if code == "name_taken"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "refused: name_taken: the name \"bob\" is taken in \"lobby\""
    );
    assert_eq!(error.exit_code(), 3);
}

#[tokio::test]
async fn server_closing_without_replying_is_closed_early() {
    let (port, _server) = fake_server(|stream| async move { drop(stream) }).await;
    let error = perform("127.0.0.1", port, &join_bob(), timeouts())
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::ClosedEarly), "{error:?}");
    assert_eq!(error.exit_code(), 4);
}

#[tokio::test]
async fn server_closing_after_the_first_reply_is_closed_early() {
    let (port, _server) = fake_server(|mut stream| async move {
        let bytes = reply(
            State::Compliance,
            "lobby",
            to_json_payload(&Compliance::accepted()),
        );
        stream.write_all(&bytes).await.unwrap();
    })
    .await;
    let error = perform("127.0.0.1", port, &join_bob(), timeouts())
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::ClosedEarly), "{error:?}");
}

#[tokio::test]
async fn silent_server_times_out() {
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let (port, _server) = fake_server(|stream| async move {
        // Holds the connection open, saying nothing, until the test is over.
        let _ = held.await;
        drop(stream);
    })
    .await;
    let short = Timeouts {
        connect: Duration::from_secs(10),
        exchange: Duration::from_millis(200),
    };
    let error = perform("127.0.0.1", port, &join_bob(), short)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::HandshakeTimeout(_)),
        "{error:?}"
    );
    assert_eq!(error.exit_code(), 4);
    drop(release);
}

#[tokio::test]
async fn malformed_reply_is_an_invalid_reply() {
    let (port, _server) = fake_server(|mut stream| async move {
        let mut header = [0u8; TCRP_HEADER_LEN];
        header[2] = 9; // no such state
        stream.write_all(&header).await.unwrap();
    })
    .await;
    let error = perform("127.0.0.1", port, &join_bob(), timeouts())
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::InvalidReply(_)), "{error:?}");
    assert_eq!(error.exit_code(), 1);
}

#[tokio::test]
async fn accepted_without_token_is_an_invalid_reply() {
    let (port, _server) = fake_server(|mut stream| async move {
        let mut bytes = reply(
            State::Compliance,
            "lobby",
            to_json_payload(&Compliance::accepted()),
        );
        bytes.extend(reply(
            State::Complete,
            "lobby",
            to_json_payload(&Grant::failed()),
        ));
        stream.write_all(&bytes).await.unwrap();
    })
    .await;
    let error = perform("127.0.0.1", port, &join_bob(), timeouts())
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::InvalidReply(_)), "{error:?}");
}

#[tokio::test]
async fn room_lists_are_requested_with_operation_4_and_an_empty_name() {
    let (port, server) = fake_server(|mut stream| async move {
        let list = RoomList {
            rooms: vec![chat_protocol::tcrp::RoomSummary {
                name: "lobby".into(),
                members: 3,
                private: false,
                topic: None,
            }],
        };
        let mut bytes = Frame::new(
            Operation::List as u8,
            State::Compliance,
            "",
            to_json_payload(&Compliance::accepted()),
        )
        .encode()
        .unwrap();
        bytes.extend(
            Frame::new(
                Operation::List as u8,
                State::Complete,
                "",
                to_json_payload(&list),
            )
            .encode()
            .unwrap(),
        );
        stream.write_all(&bytes).await.unwrap();
    })
    .await;
    let list = list_rooms("127.0.0.1", port, timeouts()).await.unwrap();
    assert_eq!(list.rooms.len(), 1);
    assert_eq!(list.rooms[0].name, "lobby");
    let request = server.await.unwrap();
    assert_eq!(request.operation, Operation::List as u8);
    assert_eq!(request.room_name, "");
}

#[tokio::test]
async fn refused_connection_is_unreachable() {
    // Bind then release a port so that nothing listens on it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let error = perform("127.0.0.1", port, &join_bob(), timeouts())
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
    assert_eq!(error.exit_code(), 4);
}
