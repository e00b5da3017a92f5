//! The API's contract, checked by an independent client: schemathesis
//! (PyPI) reads /api/openapi.json, generates requests for every operation
//! with a real admin token, and checks that no answer is a 5xx, and that
//! every answer's status, content type and body match the document.
use std::process::Command;

use anyhow::{Result, ensure};
use e2e::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_openapi_document()
-> Result<()> {
    let pki = TestPki::new(&[])?;
    let work = tempfile::tempdir()?;
    let he = start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let http = he.http_addr;
    // something to read: a site with a tank, and a load with its ETA command
    tank_site(&he.db, "site-1").await?;
    let eta = headend::wallclock::now_ms() + 3_600_000;
    let (st, v) = post_json(
        http,
        "/api/v1/loads",
        &json!({"site": "site-1", "reference": "PO-1", "tanks": ["tank-1"], "product": "diesel",
                "planned_volume_l": 5000, "eta": eta, "eta_source": "manual"}),
    )
    .await?;
    ensure!(st == 201, "{v}");
    let report = work.path().join("schemathesis.xml");
    let out = tokio::task::spawn_blocking({
        let token = token_of(http);
        let report = report.clone();
        move || {
            Command::new(python().with_file_name("schemathesis"))
                .args([
                    "run",
                    &format!("http://{http}/api/openapi.json"),
                    "--header",
                    &format!("Authorization: Bearer {token}"),
                    "--checks",
                    "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance,response_headers_conformance",
                    "--phases",
                    "examples,coverage,fuzzing",
                    "--max-examples",
                    "25",
                    "--seed",
                    "13",
                    "--request-timeout",
                    "10",
                    "--report",
                    "junit",
                    "--report-junit-path",
                ])
                .arg(&report)
                // its example database and cache go to the test's folder, not the repository
                .current_dir(report.parent().unwrap_or(std::path::Path::new("/tmp")))
                .env("SCHEMATHESIS_HOOKS", "")
                .env("NO_COLOR", "1")
                .output()
        }
    })
    .await??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // the key must never be revoked by the run itself: the admin still reads
    ensure!(get_json(http, "/api/v1/auth/me").await?["role"] == "admin");
    he.stop().await;
    ensure!(out.status.success(), "schemathesis found problems:\n{text}");
    eprintln!(
        "{}",
        text.lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}
