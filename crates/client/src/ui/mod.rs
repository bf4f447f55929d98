//! The terminal side: the lines printed and their sanitising, where they go, and what the user
//! types (plain stdin, or a line editor in a terminal).

pub mod completion;
pub mod format;
pub mod input;
pub mod screen;
pub mod terminal;
