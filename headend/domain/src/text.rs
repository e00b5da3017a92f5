//! Text the headend stores and serves.

/// Is `c` a character we never store? (Controls but tab and newline, and
/// DEL: agent text is cleaned of them, REST bodies refused with them.)
pub fn is_forbidden(c: char) -> bool {
    (c.is_control() && c != '\t' && c != '\n') || c == '\u{7f}'
}
