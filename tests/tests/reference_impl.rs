//! Interoperability with the reference implementation itself: its unmodified Python server
//! and client (../shared/reference/online-chat-messenger), run as processes. Our client
//! against their server, their client against our server.

use chat_tests::{ClientProcess, PythonProcess, ServerProcess, free_port, reference_dir};

/// Waits until the reference server has registered `count` different addresses in all
/// (a client may register the same address more than once).
fn wait_registered(server: &mut PythonProcess, count: usize) {
    let registered = |seen: &[String]| {
        let mut addresses: Vec<&str> = seen
            .iter()
            .filter_map(|line| line.split("[Registered] Address ").nth(1))
            .filter_map(|rest| rest.split(" registered").next())
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        addresses.len()
    };
    while registered(&server.seen) < count {
        server.wait_for("a registration", |line| line.contains("[Registered]"));
    }
}

#[test]
fn our_v1_client_registers_chats_and_leaves_on_the_reference_server() {
    let Some(reference) = reference_dir() else {
        return;
    };
    let (tcp, udp) = (free_port("tcp"), free_port("udp"));
    let mut server = PythonProcess::server(&reference, tcp, udp);
    let udp = udp.to_string();

    let mut hank = ClientProcess::start_on_port(
        tcp,
        &[
            "--v1",
            "--udp-port",
            &udp,
            "create",
            "lobby",
            "--name",
            "hank",
        ],
    );
    wait_registered(&mut server, 1);
    let mut ivy = ClientProcess::start_on_port(
        tcp,
        &["--v1", "--udp-port", &udp, "join", "lobby", "--name", "ivy"],
    );
    wait_registered(&mut server, 2);

    hank.send_line("hello from hank");
    // The username went as a JSON string, as the reference client sends it: the reference
    // server shows it the same way for both clients, never as {"username":...}.
    let line = ivy.wait_for("hank's message", |line| line.contains("hello from hank"));
    assert_eq!(line, "\"hank\": hello from hank");

    // Commands that need version 2 are answered locally and never reach the room.
    hank.send_line("/who");
    hank.wait_for("the /who answer", |line| {
        line.contains("/who needs version 2")
    });
    hank.send_line("/help");
    hank.wait_for("the v1 help", |line| line.starts_with("* commands:"));
    hank.send_line("after the commands");
    ivy.wait_for("the next chat line", |line| {
        line.contains("after the commands")
    });
    let relayed = server
        .seen
        .iter()
        .chain(ivy.seen.iter())
        .filter(|line| line.contains("/who") || line.contains("/help"))
        .cloned()
        .collect::<Vec<_>>();
    assert!(relayed.is_empty(), "commands went to the room: {relayed:?}");
    assert!(
        !hank.seen.iter().any(|line| line.contains(" WARN ")),
        "a log line reached the chat: {:?}",
        hank.seen
    );

    // The host leaves: the reference server deletes the room and tells ivy.
    hank.send_line("/quit");
    assert!(hank.wait_exit().success());
    server.wait_for("the room's deletion", |line| {
        line.contains("Deleting room 'lobby'")
    });
    ivy.wait_for("the room closed notice", |line| {
        line.contains("this room no longer exists")
    });
    assert!(ivy.wait_exit_with_stdin_open().success());
}

#[test]
fn default_client_falls_back_to_v1_with_the_reference_client_on_the_reference_server() {
    let Some(reference) = reference_dir() else {
        return;
    };
    let (tcp, udp) = (free_port("tcp"), free_port("udp"));
    let mut server = PythonProcess::server(&reference, tcp, udp);
    let udp_arg = udp.to_string();

    let mut jo = ClientProcess::start_on_port(
        tcp,
        &["--udp-port", &udp_arg, "create", "den", "--name", "jo"],
    );
    jo.wait_for("the fallback notice", |line| {
        line.contains("speaks only version 1")
    });
    wait_registered(&mut server, 1);
    let answers = [
        "127.0.0.1".to_owned(),
        tcp.to_string(),
        udp.to_string(),
        "2".to_owned(),
        "den".to_owned(),
        "kim".to_owned(),
    ];
    let mut kim = PythonProcess::start(&reference, "client/client.py", &answers);
    wait_registered(&mut server, 2);

    jo.send_line("hi kim");
    kim.wait_for("jo's message", |line| line.contains("\"jo\": hi kim"));
    kim.send_line("hi jo");
    jo.wait_for("kim's message", |line| line == "\"kim\": hi jo");
    assert!(
        !jo.seen.iter().any(|line| line.contains("UDP port")),
        "the fallback blamed the UDP port: {:?}",
        jo.seen
    );

    jo.close_stdin();
    assert!(jo.wait_exit().success());
    kim.wait_for("the reference client's room-closed line", |line| {
        line.contains("has left")
    });
    assert!(kim.wait_exit().is_some_and(|status| status.success()));
}

#[test]
fn listing_rooms_on_the_reference_server_says_it_is_unsupported() {
    let Some(reference) = reference_dir() else {
        return;
    };
    let (tcp, udp) = (free_port("tcp"), free_port("udp"));
    let _server = PythonProcess::server(&reference, tcp, udp);
    let mut rooms = ClientProcess::start_on_port(tcp, &["rooms"]);
    rooms.wait_for("the unsupported sentence", |line| {
        line.contains("does not support listing rooms")
    });
    assert_eq!(rooms.wait_exit().code(), Some(3));
}

#[test]
fn private_room_on_the_reference_server_is_refused_and_left() {
    let Some(reference) = reference_dir() else {
        return;
    };
    let (tcp, udp) = (free_port("tcp"), free_port("udp"));
    let mut server = PythonProcess::server(&reference, tcp, udp);
    let udp = udp.to_string();
    let mut client = ClientProcess::start_on_port(
        tcp,
        &[
            "--udp-port",
            &udp,
            "create",
            "vault",
            "--name",
            "nia",
            "--password",
            "pw",
        ],
    );
    client.wait_for("the refusal", |line| line.contains("no private rooms"));
    assert_eq!(client.wait_exit().code(), Some(3));
    server.wait_for("the room's deletion", |line| {
        line.contains("Deleting room 'vault'")
    });
}

#[test]
fn reference_client_chats_with_our_client_on_our_server() {
    let Some(reference) = reference_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let answers = [
        "127.0.0.1".to_owned(),
        server.tcp.port().to_string(),
        server.udp.port().to_string(),
        "1".to_owned(),
        "café".to_owned(),
        "lee".to_owned(),
    ];
    let mut lee = PythonProcess::start(&reference, "client/client.py", &answers);
    lee.wait_for("our server's welcome", |line| {
        line.contains("welcome to café, lee")
    });
    let mut max = ClientProcess::start(&server, &["join", "café", "--name", "max"]);
    max.wait_for("the welcome", |line| line.contains("welcome to café, max"));
    lee.wait_for("max joining", |line| line.contains("max joined"));

    max.send_line("hello lee");
    lee.wait_for("max's message", |line| line.contains("max: hello lee"));
    lee.send_line("hi max");
    max.wait_for("lee's message", |line| line == "lee: hi max");

    lee.send_line("q");
    max.wait_for("the room closing", |line| line.contains("closed"));
    assert!(max.wait_exit_with_stdin_open().success());
    assert!(lee.wait_exit().is_some_and(|status| status.success()));
}
