//! The migrations of an unreleased version only expand the schema
//! (`headend/migrations/released.txt`), so that the previous release runs on the
//! same database during a rolling upgrade (docs/deploy.md, "Rolling
//! upgrades"); a contract step says so on its first line.

use std::path::Path;

/// What in a migration would break the previous release, found in its
/// SQL (comments left out).
fn breaking(sql: &str) -> Vec<&'static str> {
    let code: String = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
        .to_uppercase();
    let words: Vec<&str> = code.split_whitespace().collect();
    let text = words.join(" ");
    let mut found = Vec::new();
    for (pattern, what) in [
        ("DROP TABLE", "drops a table"),
        ("DROP COLUMN", "drops a column"),
        ("RENAME ", "renames a table or column"),
        ("SET NOT NULL", "makes a column NOT NULL"),
        ("DROP VIEW", "drops a view"),
    ] {
        if text.contains(pattern) {
            found.push(what);
        }
    }
    if text.contains("ALTER COLUMN") && text.contains(" TYPE ") {
        found.push("changes a column's type");
    }
    // a new NOT NULL column without a default: the previous release's
    // inserts leave it out and fail
    for stmt in text.split(';') {
        if let Some(at) = stmt.find("ADD COLUMN") {
            let def = &stmt[at..];
            if def.contains("NOT NULL") && !def.contains("DEFAULT") {
                found.push("adds a NOT NULL column without a default");
            }
        }
    }
    found
}

/// The last released migration number per backend.
fn released(dir: &Path) -> (u32, u32) {
    let text = std::fs::read_to_string(dir.join("released.txt")).expect("migrations/released.txt");
    let last = text
        .lines()
        .rfind(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .expect("a release line");
    let f: Vec<&str> = last.split_whitespace().collect();
    (
        f[1].parse().expect("postgres"),
        f[2].parse().expect("sqlite"),
    )
}

#[test]
fn unreleased_migrations_only_expand_the_schema() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let (pg, sqlite) = released(&dir);
    let mut problems = Vec::new();
    for (backend, last) in [("postgres", pg), ("sqlite", sqlite)] {
        for e in std::fs::read_dir(dir.join(backend)).expect("migrations") {
            let p = e.expect("entry").path();
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            let n: u32 = name
                .split('_')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let sql = std::fs::read_to_string(&p).expect("sql");
            if n <= last || sql.starts_with("-- contract:") {
                continue;
            }
            for b in breaking(&sql) {
                problems.push(format!("{backend}/{name} {b}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "unreleased migrations that would break the previous release on a shared database (make them expand-only, or a later release's contract step):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_finds_each_kind_of_break_and_passes_expansions() {
    let cases: &[(&str, &[&str])] = &[
        ("CREATE TABLE t (a INTEGER NOT NULL)", &[]),
        ("ALTER TABLE t ADD COLUMN b TEXT", &[]),
        ("ALTER TABLE t ADD COLUMN b BIGINT NOT NULL DEFAULT 0", &[]),
        ("CREATE INDEX i ON t (a) -- DROP TABLE in a comment", &[]),
        (
            "ALTER TABLE t ADD COLUMN b TEXT NOT NULL",
            &["adds a NOT NULL column without a default"],
        ),
        ("drop table t", &["drops a table"]),
        ("ALTER TABLE t DROP COLUMN b", &["drops a column"]),
        ("ALTER TABLE t RENAME TO u", &["renames a table or column"]),
        (
            "ALTER TABLE t ALTER COLUMN b SET NOT NULL",
            &["makes a column NOT NULL"],
        ),
        (
            "ALTER TABLE t ALTER COLUMN b TYPE BIGINT",
            &["changes a column's type"],
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(breaking(sql), *want, "{sql}");
    }
}
