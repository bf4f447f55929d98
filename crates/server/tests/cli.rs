//! The `chat-server` command line as a user meets it. (Being an integration test of this
//! package also makes `cargo test --workspace` build the binary the end-to-end tests run.)

use std::process::Command;

fn chat_server() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chat-server"))
}

#[test]
fn help_lists_every_flag() {
    let output = chat_server().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--bind",
        "--tcp-port",
        "--udp-port",
        "--state",
        "--log-level",
        "--flood-rate",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}

#[test]
fn a_bad_flag_value_is_one_clear_sentence_and_a_failure() {
    let output = chat_server()
        .args(["--tcp-port", "seventy"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--tcp-port"), "{stderr}");
}

#[test]
fn an_unusable_state_path_stops_the_server_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the state file should be cannot be read as a file.
    let output = chat_server()
        .args([
            "--bind",
            "127.0.0.1",
            "--tcp-port",
            "0",
            "--udp-port",
            "0",
            "--state",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("the state file") && stderr.contains("is a directory"),
        "{stderr}"
    );
}

#[test]
fn a_corrupt_history_database_stops_the_server_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.sqlite3");
    std::fs::write(&history, vec![b'#'; 4096]).unwrap();
    let output = chat_server()
        .args([
            "--bind",
            "127.0.0.1",
            "--tcp-port",
            "0",
            "--udp-port",
            "0",
            "--state",
        ])
        .arg(dir.path().join("state.json"))
        .arg("--history")
        .arg(&history)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("cannot open the history database"),
        "{stderr}"
    );
    assert!(stderr.contains("history.sqlite3"), "{stderr}");
}
