//! The I/O around a [`Conversation`]: datagrams from the server, lines and typing from the
//! user, and timers go in; datagrams and printed lines come out, until the conversation ends.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use chat_protocol::v2::ClientV2;

use crate::error::ClientError;
use crate::failover::{FAILOVER_AFTER, Failover};
use crate::files::FileLink;
use crate::secure::plane::PlaneEvent;
use crate::transport::receive_buffer;
use crate::ui::format;
use crate::ui::input::{InputLine, Inputs, MAX_INPUT_LINE, UserEvent};
use crate::ui::screen::Screen;
use crate::v2::conversation::{Conversation, Effects, Ending, Transfer};
use crate::v2::plane::DataPlane;

/// `leave` is sent this many times, since UDP may drop one.
pub const LEAVE_COPIES: usize = 3;
/// Spacing of the `leave` copies.
pub const LEAVE_SPACING: Duration = Duration::from_millis(50);

/// Runs `conversation` on `plane` until it ends, starting with the effects `first` that
/// [`Conversation::start`] returned. On `/quit` and `/next` the server is told, `leave` sent
/// [`LEAVE_COPIES`] times.
pub async fn run(
    plane: &mut DataPlane,
    conversation: &mut Conversation,
    first: Effects,
    inputs: &mut Inputs,
    screen: &dyn Screen,
    files: Result<&FileLink, &'static str>,
    mut failover: Option<&mut Failover>,
) -> Result<Ending, ClientError> {
    let mut buffer = receive_buffer();
    let mut effects = first;
    // Scale-out: when the node in use has been silent this long, the next one is tried.
    let mut last_heard = Instant::now();
    // Transfers run on blocking threads and report here, so the chat goes on meanwhile.
    let (reports, mut reported) = mpsc::channel::<Report>(MAX_TRANSFERS);
    loop {
        for transfer in std::mem::take(&mut effects.transfers) {
            start_transfer(transfer, files, &reports, &mut effects);
        }
        if std::mem::take(&mut effects.status) {
            show_status(plane, conversation, screen)?;
        }
        if let Some(ending) = apply(plane, screen, effects).await? {
            if matches!(ending, Ending::Quit | Ending::Next) {
                leave(plane).await?;
            }
            return Ok(ending);
        }
        if let Some(failover) = failover.as_deref_mut()
            && last_heard.elapsed() >= FAILOVER_AFTER
        {
            last_heard = Instant::now();
            effects = match failover.move_on(plane).await? {
                Some(next) => {
                    screen.show(&format::notice(&format!(
                        "no answer from the server; trying {next}"
                    )))?;
                    conversation.on_failover(Instant::now())
                }
                None => Effects::default(),
            };
            continue;
        }
        let mut wakeup = tokio::time::Instant::from_std(conversation.next_wakeup());
        if failover.is_some() {
            wakeup = wakeup.min(tokio::time::Instant::from_std(last_heard + FAILOVER_AFTER));
        }
        effects = tokio::select! {
            event = plane.next(&mut buffer) => match event? {
                PlaneEvent::Message(message) => {
                    last_heard = Instant::now();
                    conversation.on_server(message, Instant::now())
                }
                PlaneEvent::Reregister => conversation.path_changed(Instant::now()),
                PlaneEvent::ProbeUdp => {
                    plane.probe_udp(&ClientV2::Register { last_id: conversation.last_id() })?;
                    Effects::default()
                }
                PlaneEvent::Nothing => Effects::default(),
            },
            event = inputs.next() => match event? {
                UserEvent::Line(InputLine::Text(text)) => {
                    conversation.on_line(&text, Instant::now())
                }
                UserEvent::Line(InputLine::TooLong) => problem(&format!(
                    "not sent, the line is longer than {MAX_INPUT_LINE} bytes"
                )),
                UserEvent::Line(InputLine::NotUtf8) => {
                    problem("not sent, the line is not valid UTF-8")
                }
                UserEvent::EndOfInput | UserEvent::Interrupted => {
                    conversation.on_end_of_input(Instant::now())
                }
                UserEvent::Typing => conversation.on_typing(Instant::now()),
            },
            () = tokio::time::sleep_until(wakeup) => conversation.on_tick(Instant::now()),
            Some(report) = reported.recv() => match report {
                Ok(line) => Effects { lines: vec![format::notice(&line)], ..Effects::default() },
                Err(line) => problem(&line),
            },
        };
    }
}

/// Sends and prints what the conversation asked for; returns its ending, if it ended.
async fn apply(
    plane: &mut DataPlane,
    screen: &dyn Screen,
    effects: Effects,
) -> Result<Option<Ending>, ClientError> {
    for message in &effects.send {
        tracing::trace!(?message, "sending");
        plane.send_v2(message).await?;
    }
    for line in &effects.lines {
        screen.show(line)?;
    }
    for line in &effects.problems {
        screen.problem(line)?;
    }
    if let Some(names) = &effects.members {
        screen.names(names);
    }
    Ok(effects.ending)
}

/// How a transfer went, in a sentence: `Ok` for the transcript, `Err` as a problem.
type Report = Result<String, String>;

/// Transfers in progress at once; more are refused until one finishes.
const MAX_TRANSFERS: usize = 4;

/// Starts a transfer on a blocking thread; its report comes back on `reports`.
fn start_transfer(
    transfer: Transfer,
    files: Result<&FileLink, &'static str>,
    reports: &mpsc::Sender<Report>,
    effects: &mut Effects,
) {
    let files = match files {
        Ok(files) => files.clone(),
        Err(why) => {
            effects.problems.push(format::notice(why));
            return;
        }
    };
    let Ok(slot) = reports.clone().try_reserve_owned() else {
        effects.problems.push(format::notice(&format!(
            "{MAX_TRANSFERS} transfers are already running; wait for one to finish"
        )));
        return;
    };
    tokio::task::spawn_blocking(move || {
        let report = match transfer {
            Transfer::Upload(path) => files
                .upload(&path)
                .map(|shared| {
                    format!(
                        "shared {} ({} bytes) as {}",
                        shared.name, shared.size, shared.id
                    )
                })
                .map_err(|error| format!("not shared: {error}")),
            Transfer::Download { id, to } => files
                .download(&id, to.as_deref(), Path::new("."))
                .map(|(shared, saved)| {
                    format!(
                        "saved {} ({} bytes, checksum verified) to {}",
                        shared.name,
                        shared.size,
                        saved.display()
                    )
                })
                .map_err(|error| format!("not downloaded: {error}")),
        };
        slot.send(report);
    });
}

/// Tells the server this member leaves: `leave`, [`LEAVE_COPIES`] times.
pub async fn leave(plane: &mut DataPlane) -> Result<(), ClientError> {
    for copy in 0..LEAVE_COPIES {
        if copy > 0 {
            tokio::time::sleep(LEAVE_SPACING).await;
        }
        plane.send_v2(&ClientV2::Leave).await?;
    }
    Ok(())
}

/// `/status`: the path, the server's fingerprint, the protocol version, room and name.
fn show_status(
    plane: &DataPlane,
    conversation: &Conversation,
    screen: &dyn Screen,
) -> Result<(), ClientError> {
    let status = plane.status();
    let (room, me) = conversation.who_where();
    let fingerprint = status
        .fingerprint
        .unwrap_or_else(|| "none (not encrypted)".into());
    for line in [
        format!("room: {room}, as {me}"),
        format!("protocol version {}, path: {}", status.version, status.path),
        format!("server: {} (certificate {fingerprint})", status.server),
    ] {
        screen.show(&format::notice(&line))?;
    }
    Ok(())
}

/// A problem with a line the user typed, which never reached the conversation.
fn problem(text: &str) -> Effects {
    Effects {
        problems: vec![format::notice(text)],
        ..Effects::default()
    }
}
