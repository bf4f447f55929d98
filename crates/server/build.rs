//! Records the commit the binary is built from, for `chat-server --version`.

#[path = "../../build/commit.rs"]
mod commit;

fn main() {
    commit::record();
}
