//! Bounds on configuration text, checked before the YAML parser sees it.
//!
//! A YAML document can be far bigger in memory than on disk: nine
//! anchors, each aliased nine times by the next, expand a 1 MB file to
//! gigabytes ("billion laughs"); deep nesting makes the parser's work grow
//! faster than the file. An agent configuration needs neither, so:
//! * at most [`MAX_BYTES`];
//! * no anchors (`&name`) or aliases (`*name`): write values out;
//! * flow nesting (`[`, `{`) at most [`MAX_FLOW_DEPTH`] deep, and block
//!   indentation at most [`MAX_INDENT`] columns.
//!
//! The scanner knows quotes, comments and block scalars well enough for
//! configuration files; it errs on the side of refusing.

/// Largest configuration file, bytes.
pub const MAX_BYTES: usize = 1024 * 1024;
/// Deepest `[`/`{` nesting.
pub const MAX_FLOW_DEPTH: usize = 32;
/// Deepest indentation, columns.
pub const MAX_INDENT: usize = 128;

/// A refused text: the problem and its line and column (1-based).
#[derive(Debug, PartialEq)]
pub struct Refused {
    pub line: usize,
    pub column: usize,
    pub msg: String,
}

/// Is the rest of a line after `|` or `>` a block scalar header (`|`, `|-`, `>2+`, with an optional comment)?
fn is_block_indicator(rest: &[char]) -> bool {
    let s: String = rest.iter().collect();
    let s = s.split(" #").next().unwrap_or("").trim();
    s.chars()
        .all(|x| x.is_ascii_digit() || x == '-' || x == '+')
}

/// Checks `text` against the bounds above.
pub fn check(text: &str) -> Result<(), Refused> {
    if text.len() > MAX_BYTES {
        return Err(Refused {
            line: 1,
            column: 1,
            msg: format!(
                "the file is {} bytes; an agent configuration is at most {MAX_BYTES}",
                text.len()
            ),
        });
    }
    let mut depth = 0usize;
    // (quote char) while inside a flow-scalar quote that may span lines
    let mut quote: Option<char> = None;
    // indentation of a block scalar (| or >) in progress: its lines are text
    let mut block: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let at = |column: usize, msg: String| Refused {
            line: i + 1,
            column: column + 1,
            msg,
        };
        if let Some(b) = block {
            if line.trim().is_empty() || indent > b {
                continue;
            }
            block = None;
        }
        if indent > MAX_INDENT {
            return Err(at(
                indent,
                format!("indented {indent} columns; nesting is limited to {MAX_INDENT}"),
            ));
        }
        let chars: Vec<char> = line.chars().collect();
        let mut prev = ' ';
        for (c_at, &c) in chars.iter().enumerate() {
            if let Some(q) = quote {
                if c == q {
                    quote = None;
                }
                prev = c;
                continue;
            }
            let token_start = prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':' | '-');
            match c {
                '#' if prev.is_whitespace() || c_at == 0 => break,
                '"' | '\'' if token_start => quote = Some(c),
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err(at(
                            c_at,
                            format!("nested more than {MAX_FLOW_DEPTH} levels deep"),
                        ));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                '&' | '*'
                    if token_start && chars.get(c_at + 1).is_some_and(|n| !n.is_whitespace()) =>
                {
                    return Err(at(
                        c_at,
                        "YAML anchors (&name) and aliases (*name) are not allowed in an agent configuration (they can expand a small file to gigabytes); write the values out".into(),
                    ));
                }
                '|' | '>' if token_start && is_block_indicator(&chars[c_at + 1..]) => {
                    block = Some(indent);
                    break;
                }
                _ => {}
            }
            prev = c;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Option<(usize, String)> {
        check(text).err().map(|r| (r.line, r.msg))
    }

    #[test]
    fn ordinary_configuration_passes() {
        for ok in [
            "site_id: s\nassets:\n  - { id: tank-1, kind: tank }\n",
            "name: \"R&D *lab*\"\nx: 'a & b'\n",
            "a: 2 * 3 & 4\n",
            "# a comment with &anchor and *alias\nk: v # and here *too\n",
            "text: |\n  &not_an_anchor\n  *nor_an_alias\nnext: 1\n",
            "list: [1, [2, [3]]]\n",
            include_str!("../../configs/site-demo.yaml"),
        ] {
            assert_eq!(refused(ok), None, "{ok}");
        }
    }

    #[test]
    fn amplification_deep_nesting_and_huge_files_are_refused_with_their_line() {
        let laughs = "a: &a [\"lol\",\"lol\"]\nb: &b [*a,*a,*a]\nc: [*b,*b]\n";
        let (line, msg) = refused(laughs).unwrap();
        assert_eq!(line, 1);
        assert!(msg.contains("anchors"), "{msg}");
        assert_eq!(refused("x: 1\ny: *x\n").map(|r| r.0), Some(2));
        let deep = format!("k: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let t = std::time::Instant::now();
        assert!(refused(&deep).unwrap().1.contains("nested"));
        assert!(t.elapsed() < std::time::Duration::from_millis(500));
        let mut blocky = String::new();
        for i in 0..200 {
            blocky.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        assert!(refused(&blocky).unwrap().1.contains("indented"));
        let big = "# x\n".repeat(MAX_BYTES / 4 + 1);
        assert!(refused(&big).unwrap().1.contains("at most"));
    }
}
