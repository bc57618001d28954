//! The OpenAPI description against the live server: `schemathesis` (PyPI, pinned in
//! `scripts/schemathesis.sh`) generates requests for every operation from
//! `GET /api/openapi.json` of a `presence standalone` with a database, and fails on any answer
//! the description does not allow (status, content type, headers, body schema), any 5xx, any
//! request outside the description that is accepted, and any call that ignores its auth.
//!
//! Two operations are left out of the generated run, and tested here by hand instead: the
//! dashboard's Server-Sent Events stream never ends, and a WebSocket upgrade is answered
//! `101` and then speaks WebSocket, neither of which schemathesis reads.

use std::process::Stdio;
use std::time::Duration;

use presence_e2e::{Deployment, Mode, http, service_token};
use serde_json::Value;

/// Requests schemathesis generates per operation and phase: bounded, so the run takes well
/// under a minute.
const EXAMPLES_PER_OPERATION: &str = "40";

fn schemathesis() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = std::process::Command::new(format!("{root}/scripts/schemathesis.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/schemathesis.sh");
    assert!(out.status.success(), "installing schemathesis failed");
    String::from_utf8(out.stdout)
        .expect("a path")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn every_answer_of_the_live_server_keeps_to_its_openapi_description() {
    let d = Deployment::with_persistence(
        Mode::Standalone,
        // The description of production: the operators' endpoints need a service token. The
        // per-IP budget is raised so the generated requests reach the handlers rather than
        // the limiter (whose 429 is described too, and tested in `limits.rs`).
        &[
            ("PRESENCE_ENV", "production".into()),
            ("PRESENCE_RATE_LIMIT_IP_PER_MIN", "100000".into()),
        ],
    )
    .await
    .expect("standalone with a database");
    let description = http("GET", &format!("{}/api/openapi.json", d.a), &[], None)
        .await
        .expect("fetching the description");
    assert_eq!(description.status, 200);
    let doc: Value = serde_json::from_str(&description.body).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["paths"]["/api/presence/{userId}"]["get"]["security"].is_array(),
        "the presence API names its auth"
    );

    let st = schemathesis();
    let work = std::env::temp_dir().join(format!("schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("a work directory");
    let run = tokio::process::Command::new(&st)
        .current_dir(&work)
        .args([
            "run",
            &format!("{}/api/openapi.json", d.a),
            "--header",
            &format!("Authorization: Bearer {}", service_token()),
            "--checks",
            "all",
            "--exclude-path",
            "/api/dashboard/stream",
            "--exclude-path",
            "/ws/active-users",
            "--max-examples",
            EXAMPLES_PER_OPERATION,
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--no-color",
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("schemathesis finished within 5 minutes")
        .expect("running schemathesis");
    let _ = std::fs::remove_dir_all(&work);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found answers outside the description:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It ran every operation it was given, and generated requests for each.
    assert!(
        report.contains("Tested: 13"),
        "not every operation was tested:\n{report}"
    );
    // The server is still up and answering after the run.
    let health = http("GET", &format!("{}/api/health", d.a), &[], None)
        .await
        .expect("health after the run");
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn the_two_operations_left_out_of_the_generated_run_answer_as_described() {
    let d = Deployment::start(Mode::Standalone, &[("PRESENCE_ENV", "production".into())])
        .await
        .expect("standalone");
    // A GET of the WebSocket endpoint that is not an upgrade: 400 in the active-users error
    // shape, counted.
    let answer = http("GET", &format!("{}/ws/active-users", d.a), &[], None)
        .await
        .expect("plain GET");
    assert_eq!(answer.status, 400, "{}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).expect("a JSON error");
    assert_eq!(body["code"], "not_a_websocket");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("upgrade")),
        "{body}"
    );
    let metrics = http("GET", &format!("{}/metrics", d.edge_admin(0)), &[], None)
        .await
        .expect("scraping");
    assert!(
        metrics.body.lines().any(|l| l.starts_with(
            r#"presence_http_rejected_total{endpoint="ws",reason="not_a_websocket"} 1"#
        )),
        "the refusal is counted:\n{}",
        metrics.body
    );
    // The dashboard stream needs a service token in production, and answers an event stream
    // with one.
    let refused = http("GET", &format!("{}/api/dashboard/stream", d.a), &[], None)
        .await
        .expect("stream without a token");
    assert_eq!(refused.status, 401, "{}", refused.body);
    let body: Value = serde_json::from_str(&refused.body).expect("a JSON error");
    assert!(body["message"].is_string() && body["error"] == "Unauthorized");
    let doc: Value = serde_json::from_str(
        &http("GET", &format!("{}/api/openapi.json", d.a), &[], None)
            .await
            .expect("description")
            .body,
    )
    .expect("JSON");
    for (path, status) in [
        ("/ws/active-users", "400"),
        ("/api/dashboard/stream", "401"),
        ("/api/dashboard/stream", "200"),
    ] {
        assert!(
            doc["paths"][path]["get"]["responses"][status].is_object(),
            "{path} {status} is described"
        );
    }
    assert!(
        doc["paths"]["/api/dashboard/stream"]["get"]["responses"]["200"]["content"]
            ["text/event-stream"]
            .is_object()
    );
}
