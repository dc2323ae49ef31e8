//! Small helpers shared across layers.

/// `text` cut to at most `max` bytes (at a character boundary), with `...`
/// where it was cut: for messages that quote what a user sent.
pub fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max.saturating_sub(3);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("abcdefghijkl", 8), "abcde...");
        assert_eq!(shorten("ééééé", 6), "é...");
    }
}
