//! Tab completion in the terminal: `/` commands at the start of the line, member names
//! anywhere (with or without `@`), case-insensitively.

/// Every command, for completion.
pub const COMMANDS: [&str; 17] = [
    "/away",
    "/back",
    "/ban",
    "/exit",
    "/help",
    "/history",
    "/host",
    "/ignore",
    "/kick",
    "/me",
    "/msg",
    "/next",
    "/quit",
    "/search",
    "/topic",
    "/unignore",
    "/who",
];

/// Where the word before `pos` starts, and what it may become: commands when it is the
/// first word and starts with `/`, otherwise the names in `names` that it begins (an `@`
/// in front stays). Sorted, without duplicates.
pub fn complete(line: &str, pos: usize, names: &[String]) -> (usize, Vec<String>) {
    let Some(before) = line.get(..pos) else {
        return (pos, Vec::new());
    };
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
        .map_or(0, |(at, c)| at + c.len_utf8());
    let word = &before[start..];
    let mut found: Vec<String> = if start == 0 && word.starts_with('/') {
        let typed = word.to_lowercase();
        COMMANDS
            .iter()
            .filter(|command| command.starts_with(&typed))
            .map(|command| format!("{command} "))
            .collect()
    } else {
        let (at, typed) = match word.strip_prefix('@') {
            Some(rest) => ("@", rest.to_lowercase()),
            None => ("", word.to_lowercase()),
        };
        if typed.is_empty() && at.is_empty() {
            return (pos, Vec::new());
        }
        names
            .iter()
            .filter(|name| name.to_lowercase().starts_with(&typed))
            .map(|name| format!("{at}{name}"))
            .collect()
    };
    found.sort();
    found.dedup();
    (start, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["alice", "Bob", "bobby", "Émilie"]
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn commands_complete_at_the_start_of_the_line() {
        assert_eq!(
            complete("/to", 3, &names()),
            (0, vec!["/topic ".to_owned()])
        );
        assert_eq!(
            complete("/h", 2, &names()),
            (
                0,
                vec!["/help ".into(), "/history ".into(), "/host ".into()]
            )
        );
        assert_eq!(complete("say /to", 7, &names()).1, Vec::<String>::new());
    }

    #[test]
    fn names_complete_anywhere_in_any_case() {
        assert_eq!(
            complete("hi bo", 5, &names()),
            (3, vec!["Bob".into(), "bobby".into()])
        );
        assert_eq!(complete("@ém", 3, &names()), (0, vec!["@Émilie".into()]));
        assert_eq!(complete("/msg al", 7, &names()), (5, vec!["alice".into()]));
        assert_eq!(complete("hi ", 3, &names()).1, Vec::<String>::new());
        // The cursor need not be at the end.
        assert_eq!(complete("al there", 2, &names()), (0, vec!["alice".into()]));
    }
}
