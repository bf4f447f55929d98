//! Records the commit the binary is built from, for `chat-client --version`.

#[path = "../../build/commit.rs"]
mod commit;

fn main() {
    commit::record();
}
