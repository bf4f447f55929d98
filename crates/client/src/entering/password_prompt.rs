//! Asking for a room's password on the terminal, without echoing it.

use crate::error::ClientError;

/// Asks on the controlling terminal for the password of `room`. The answer is never logged.
pub async fn ask(room: &str) -> Result<String, ClientError> {
    let prompt = format!("password for {room}: ");
    tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
        .await
        .map_err(|error| ClientError::Password(std::io::Error::other(error.to_string())))?
        .map_err(ClientError::Password)
}
