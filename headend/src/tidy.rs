//! The headend's layers, checked (in the spirit of rust-analyzer's
//! `xtask/src/tidy.rs`): which module may import which, and that SQL is
//! written only under `store/`. The pure model is its own crate
//! (`headend/domain`), so the compiler keeps it pure; this test keeps the
//! rest in order. ARCHITECTURE.md ("The headend's layers") is the prose.
//!
//! A path is read from the code with comments and string literals taken
//! out: `use crate::a::b`, `use crate::{a, b::c}`, `crate::a::f()` in an
//! expression, and `super::…` resolved from the file's own module.

use std::collections::BTreeSet;
use std::path::Path;

/// Each layer (the first module under `src/`) and the layers it may use.
/// Its own layer and `domain` (a crate below all) are always allowed.
/// `lib` is the crate root (`start`, `Config`): only `main` uses it.
const ALLOWED: &[(&str, &[&str])] = &[
    ("wallclock", &[]),
    ("error", &[]),
    ("metrics", &[]),
    ("supervise", &[]),
    ("store", &["error", "wallclock", "metrics"]),
    ("services", &["store", "error", "wallclock", "metrics"]),
    ("listen", &["error", "wallclock", "metrics"]),
    // the gRPC side is a transport with a pipeline of its own: it commits
    // batches through the store's ingest path (the one documented exception
    // to "transport calls services"; ARCHITECTURE.md says why)
    (
        "ingest",
        &[
            "services",
            "store",
            "listen",
            "error",
            "wallclock",
            "metrics",
        ],
    ),
    // the one documented exception: the REST API reads through the store
    // (its rows, `Db`'s read methods) where a read needs no rule; every
    // write goes through a service (checked below: [`API_WRITES`])
    (
        "api",
        &[
            "services",
            "store",
            "listen",
            "error",
            "wallclock",
            "metrics",
        ],
    ),
    (
        "jobs",
        &["services", "store", "error", "wallclock", "metrics"],
    ),
    // the wiring (lib.rs and wiring.rs) may use every layer
    (
        "wiring",
        &[
            "lib",
            "api",
            "ingest",
            "jobs",
            "listen",
            "services",
            "store",
            "error",
            "wallclock",
            "metrics",
            "supervise",
        ],
    ),
    (
        "lib",
        &[
            "api",
            "ingest",
            "jobs",
            "listen",
            "services",
            "store",
            "error",
            "wallclock",
            "metrics",
            "supervise",
            "wiring",
        ],
    ),
];

/// Store methods that write: the API reaches them only through services.
const API_WRITES: &[&str] = &[
    "append",
    "apply",
    "begin_write",
    "cancel",
    "create",
    "delete",
    "insert",
    "put",
    "record",
    "redeem",
    "release",
    "resolve",
    "revoke",
    "set",
    "unlock",
    "update",
    "upsert",
];

/// Where SQL may be written.
const SQL_HOME: &str = "store";

/// One broken rule: the file, the line and what it did.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub file: String,
    pub line: usize,
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.what)
    }
}

/// The module path of a file under `src/` (`api/mod.rs` → `["api"]`,
/// `lib.rs` → `[]`).
fn module_of(rel: &str) -> Vec<String> {
    if rel == "main.rs" || rel.starts_with("main/") {
        // the binary (main.rs and its modules under main/): a crate of
        // its own, counted as the layer `main`
        return vec!["main".into()];
    }
    let rel = rel.trim_end_matches(".rs");
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The layer of a module path: its first module, `lib` for the root.
fn layer_of(module: &[String]) -> String {
    module.first().cloned().unwrap_or_else(|| "lib".into())
}

/// The layer a root-level name belongs to (`crate::Error` is `error`'s).
fn layer_of_root_item(name: &str) -> String {
    match name {
        "Error" => "error".into(),
        "domain" => "domain".into(),
        n if ALLOWED.iter().any(|(l, _)| *l == n) => n.into(),
        // `start`, `Config`, `supervised`: the wiring in lib.rs
        _ => "lib".into(),
    }
}

/// The text with comments and the contents of string and char literals
/// blanked (newlines kept, so line numbers stay).
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            while i < b.len() && !(b[i] == '*' && b.get(i + 1) == Some(&'/')) {
                out.push(if b[i] == '\n' { '\n' } else { ' ' });
                i += 1;
            }
            i += 2;
        } else if c == 'r' && (next == Some('#') || next == Some('"')) && !ident_before(&b, i) {
            // raw string r"…" / r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push('"');
            j += 1;
            loop {
                match b.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| b.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    Some('\n') => out.push('\n'),
                    Some(_) => {}
                }
                j += 1;
            }
            out.push('"');
            i = j;
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if b.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && b.get(i + 2) == Some(&'\'') {
            out.push_str("' '");
            i += 3;
        } else if c == '\'' && next == Some('\\') {
            // '\n', '\'', '\u{..}'
            let mut j = i + 2;
            while j < b.len() && b[j] != '\'' {
                j += 1;
            }
            out.push_str("' '");
            i = j + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

fn ident_at(b: &[char], mut i: usize) -> (String, usize) {
    let mut s = String::new();
    while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
        s.push(b[i]);
        i += 1;
    }
    (s, i)
}

fn skip_ws(b: &[char], mut i: usize) -> usize {
    while i < b.len() && b[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The first segments named after `crate::` or `super::…::` at `i`
/// (several for a `{a, b::c}` group): each as a path from the crate root.
fn targets(b: &[char], start: usize, module: &[String]) -> Vec<Vec<String>> {
    let (first, mut i) = ident_at(b, start);
    let mut base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "super" => {
            let mut m = module.to_vec();
            m.pop();
            m
        }
        _ => return Vec::new(),
    };
    // more `::super`, then names
    loop {
        if !(b.get(i) == Some(&':') && b.get(i + 1) == Some(&':')) {
            return vec![base];
        }
        i = skip_ws(b, i + 2);
        if b.get(i) == Some(&'{') {
            return group(b, i + 1)
                .into_iter()
                .map(|name| {
                    let mut p = base.clone();
                    p.push(name);
                    p
                })
                .collect();
        }
        let (name, j) = ident_at(b, i);
        if name.is_empty() {
            return vec![base];
        }
        i = j;
        if name == "super" {
            base.pop();
            continue;
        }
        base.push(name);
        // two segments are enough to tell a layer (and `super::super::x`)
        if base.len() >= 2 {
            return vec![base];
        }
    }
}

/// The first names of each path in a `{…}` use group.
fn group(b: &[char], mut i: usize) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut at_start = true;
    while i < b.len() {
        match b[i] {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_start = true,
            c if at_start && (c.is_alphanumeric() || c == '_') => {
                let (name, j) = ident_at(b, i);
                names.push(name);
                at_start = false;
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

/// Every rule one file breaks. `rel` is its path under `src/`.
pub fn check_file(rel: &str, text: &str) -> Vec<Violation> {
    let module = module_of(rel);
    let layer = layer_of(&module);
    let code = code_only(text);
    let b: Vec<char> = code.chars().collect();
    let mut out = BTreeSet::new();
    let mut line = 1;
    let allowed = ALLOWED.iter().find(|(l, _)| *l == layer).map(|(_, a)| *a);
    // inline modules (`mod tests {`): `super` counts from them
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            '\n' => line += 1,
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            'm' if !ident_before(&b, i) && b[i..].starts_with(&['m', 'o', 'd', ' ']) => {
                let (name, j) = ident_at(&b, skip_ws(&b, i + 4));
                if b.get(skip_ws(&b, j)) == Some(&'{') {
                    inline.push((name, depth));
                }
            }
            _ => {}
        }
        let starts_path = !ident_before(&b, i)
            && (i == 0 || b[i - 1] != ':')
            && (b[i..].starts_with(&['c', 'r', 'a', 't', 'e', ':', ':'])
                || b[i..].starts_with(&['s', 'u', 'p', 'e', 'r', ':', ':']));
        if starts_path {
            let mut here = module.clone();
            here.extend(inline.iter().map(|(n, _)| n.clone()));
            if layer == "main" {
                here.clear();
            }
            for path in targets(&b, i, &here) {
                let to = match path.first() {
                    Some(first) => layer_of_root_item(first),
                    None => "lib".into(),
                };
                if to == layer || to == "domain" || to == "tidy" {
                    continue;
                }
                let ok = match allowed {
                    Some(a) => a.contains(&to.as_str()),
                    // `main` (the binary) may use everything
                    None => layer == "main",
                };
                if !ok {
                    out.insert(Violation {
                        file: rel.into(),
                        line,
                        what: format!(
                            "`{layer}` uses `{}` (layer `{to}`), which it may not",
                            path.join("::")
                        ),
                    });
                }
            }
        }
        i += 1;
    }
    if layer != SQL_HOME {
        out.extend(sql_outside_store(rel, text));
    }
    if layer == "api" {
        out.extend(api_store_writes(rel, &code));
    }
    out.into_iter().collect()
}

/// SQL in a file outside `store/`: a query call, or a string literal that
/// is a statement.
fn sql_outside_store(rel: &str, text: &str) -> Vec<Violation> {
    const CALLS: &[&str] = &[
        "sqlx::query",
        "query_as(",
        "query_scalar(",
        "QueryBuilder",
        ".prepare(",
        ".prepare_cached(",
    ];
    const STATEMENTS: &[&str] = &[
        "\"SELECT ",
        "\"INSERT INTO",
        "\"UPDATE ",
        "\"DELETE FROM",
        "\"WITH ",
        "\"CREATE ",
        "\"PRAGMA ",
    ];
    let mut out = Vec::new();
    let code = code_only(text);
    for (n, (raw, code)) in text.lines().zip(code.lines()).enumerate() {
        if raw.trim_start().starts_with("//") {
            continue;
        }
        let call = CALLS.iter().find(|c| code.contains(*c));
        let stmt = STATEMENTS.iter().find(|s| raw.contains(*s));
        if let Some(what) = call.or(stmt) {
            out.push(Violation {
                file: rel.into(),
                line: n + 1,
                what: format!("SQL outside store/ ({})", what.trim_matches('"')),
            });
        }
    }
    out
}

/// A store write called from the API: `db.x().verb…(` or `db.verb…(`
/// where the verb is one of [`API_WRITES`] (whitespace and line breaks
/// in the chain do not hide it).
fn api_store_writes(rel: &str, code: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    for (n, window) in chains(code) {
        // the chain's calls after `db`
        for name in window
            .split('.')
            .skip(1)
            .map(|c| c.split('(').next().unwrap_or(""))
        {
            if API_WRITES
                .iter()
                .any(|w| name == *w || name.starts_with(&format!("{w}_")))
            {
                out.push(Violation {
                    file: rel.into(),
                    line: n,
                    what: format!("the API writes through the store (`db…{name}`): call a service"),
                });
            }
        }
    }
    out
}

/// Each method chain on a value named `db` (`s.db.users().get(…)`), with
/// its line, whitespace removed and arguments dropped.
fn chains(code: &str) -> Vec<(usize, String)> {
    let b: Vec<char> = code.chars().collect();
    let mut lines = Vec::with_capacity(b.len());
    let mut line = 1;
    for c in &b {
        lines.push(line);
        if *c == '\n' {
            line += 1;
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let is_db = b[i..].starts_with(&['d', 'b'])
            && !ident_before(&b, i)
            && !b
                .get(i + 2)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_');
        if !is_db {
            i += 1;
            continue;
        }
        let start_line = lines[i];
        let mut chain = String::from("db");
        let mut j = i + 2;
        loop {
            let k = skip_ws(&b, j);
            if b.get(k) != Some(&'.') {
                break;
            }
            let (name, after) = ident_at(&b, skip_ws(&b, k + 1));
            if name.is_empty() {
                break;
            }
            chain.push('.');
            chain.push_str(&name);
            j = after;
            // skip the call's arguments
            let k = skip_ws(&b, j);
            if b.get(k) == Some(&'(') {
                let mut depth = 0;
                let mut m = k;
                while m < b.len() {
                    match b[m] {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    m += 1;
                }
                chain.push_str("()");
                j = m + 1;
            }
        }
        if chain.contains('.') {
            out.push((start_line, chain));
        }
        i = j.max(i + 1);
    }
    out
}

/// Every rule broken under `src/`.
pub fn check_tree(src: &Path) -> Vec<Violation> {
    let mut files = Vec::new();
    collect(src, src, &mut files);
    let mut out = Vec::new();
    for (rel, text) in files {
        if rel == "tidy.rs" {
            continue;
        }
        out.extend(check_file(&rel, &text));
    }
    out.sort();
    out
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(root, &p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p
                .strip_prefix(root)
                .map(|r| r.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            if let Ok(text) = std::fs::read_to_string(&p) {
                out.push((rel, text));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headend_keeps_its_layers_and_writes_sql_only_in_the_store() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let found = check_tree(&src);
        assert!(
            found.is_empty(),
            "{} layering rule(s) broken (ARCHITECTURE.md, \"The headend's layers\"):\n{}",
            found.len(),
            found
                .iter()
                .map(|v| format!("  {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    fn whats(rel: &str, text: &str) -> Vec<String> {
        check_file(rel, text).into_iter().map(|v| v.what).collect()
    }

    #[test]
    fn a_store_that_imports_a_service_is_found() {
        let found = whats(
            "store/loads.rs",
            "use crate::services::loads::create;\nuse crate::Error;\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("`store` uses `services::loads`"));
    }

    #[test]
    fn an_api_handler_that_runs_sql_or_reaches_the_store_is_found() {
        let text = "use crate::ingest::Sessions;\nasync fn h(db: &Db) {\n    sqlx::query(\"SELECT 1\").execute(db.pool()).await;\n}\n";
        let found = whats("api/telemetry.rs", text);
        assert!(
            found
                .iter()
                .any(|w| w.contains("`api` uses `ingest::Sessions`")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|w| w.contains("SQL outside store/")),
            "{found:?}"
        );
        // a statement in a literal of its own counts too
        let found = whats("services/x.rs", "let q = \"DELETE FROM loads\";\n");
        assert!(found.iter().any(|w| w.contains("DELETE FROM")), "{found:?}");
    }

    #[test]
    fn an_api_handler_that_writes_through_the_store_is_found_and_a_read_is_not() {
        let text = "async fn h(s: S) {\n    let u = s.db.users().get(&id).await?;\n    s\n        .db\n        .users()\n        .revoke_session(&id, now, \"x\")\n        .await?;\n    g.api.db.audit().append(e).await;\n}\n";
        let found = check_file("api/auth.rs", text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].line, found[1].line), (4, 8), "{found:?}");
        assert!(found[0].what.contains("revoke_session"), "{found:?}");
        assert!(found[1].what.contains("append"), "{found:?}");
        // the same calls in a service are its job
        assert!(check_file("services/access.rs", text).is_empty());
    }

    #[test]
    fn upward_imports_are_found_in_groups_expressions_and_through_super() {
        let found = whats(
            "services/commands.rs",
            "use crate::{store::Db, ingest::dispatch::Dispatcher};\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("`services` uses `ingest`"), "{found:?}");
        let found = whats("store/x.rs", "fn f() { crate::jobs::run(); }\n");
        assert_eq!(found.len(), 1, "{found:?}");
        let found = whats(
            "api/inventory/csv.rs",
            "use super::super::super::ingest::Sessions;\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        // the crate root (`start`, `Config`) is for `main` alone
        let found = whats("services/x.rs", "fn f(c: &crate::Config) {}\n");
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn comments_strings_and_allowed_paths_are_not_counted() {
        let text = "//! [`crate::api`] serves this\n/// see crate::ingest\nuse crate::store::Db;\nuse crate::Error;\nuse super::inventory::Row;\nconst S: &str = \"crate::api\";\nlet c = '\"'; let d = crate::wallclock::now_ms();\n";
        assert_eq!(whats("services/loads.rs", text), Vec::<String>::new());
        assert_eq!(
            whats("main.rs", "use headend::api; fn f() { crate::x::y(); }"),
            Vec::<String>::new()
        );
    }
}
