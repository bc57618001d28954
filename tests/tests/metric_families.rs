//! Metrics that exist from start-up: a fresh deployment already exports its connection, sweep,
//! delivery and rejection families at zero (so `rate()` and `absent()` alerts work on a quiet
//! cluster), and what every role exports passes `promtool check metrics` (Debian's
//! `prometheus` package), before and after traffic.

use std::time::Duration;

use presence_e2e::{Deployment, Mode, connect, expect_update, http};
use presence_sio_client::SioClient;
use serde_json::json;

async fn scrape(admin: &str) -> String {
    let answer = http("GET", &format!("{admin}/metrics"), &[], None)
        .await
        .expect("scraping /metrics");
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

/// The value of the sample `series` (name and labels exactly as rendered, e.g.
/// `presence_connections{transport="socketio"}`), if exported.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// `promtool check metrics` on `text`: the names, types and help texts follow Prometheus'
/// conventions.
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is missing: apt-get install prometheus");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_fresh_standalone_exports_connection_sweep_delivery_and_rejection_families_at_zero() {
    let d = Deployment::start(Mode::Standalone, &[])
        .await
        .expect("standalone");
    let text = scrape(&d.edge_admin(0)).await;
    for series in [
        r#"presence_connections{transport="socketio"}"#,
        r#"presence_connections{transport="websocket"}"#,
        r#"presence_connections_opened_total{transport="socketio"}"#,
        "presence_swept_connections_total",
        r#"presence_changes_total{cause="sweep"}"#,
        "presence_fanout_deliveries_total",
        r#"presence_fanout_send_failures_total{reason="full"}"#,
        r#"presence_handshakes_rejected_total{reason="invalid"}"#,
        r#"presence_socket_rejected_total{event="user:status",reason="unknown_status"}"#,
        r#"presence_http_rejected_total{endpoint="join",reason="missing_field"}"#,
        r#"presence_rate_limited_total{blocked_by="ip"}"#,
        "presence_persister_write_failures_total",
    ] {
        // The persister runs in a standalone only with a database.
        if series.starts_with("presence_persister") {
            assert_eq!(sample(&text, series), None, "{series} without a database");
            continue;
        }
        assert_eq!(
            sample(&text, series),
            Some(0.0),
            "{series} is not exported at 0 before any client:\n{text}"
        );
    }
    // The sweep clock ticks from the start, with nobody to sweep.
    assert!(
        sample(&text, "presence_sweeps_total").is_some(),
        "no presence_sweeps_total:\n{text}"
    );
    promtool_check(&text);
}

/// The metric names the Grafana dashboard and the alert rules in `infra/` use.
fn names_used_in_infra() -> std::collections::BTreeSet<String> {
    let infra = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra");
    let mut names = std::collections::BTreeSet::new();
    for file in ["grafana/presence.json", "prometheus/alerts.yml"] {
        let text = std::fs::read_to_string(infra.join(file)).expect(file);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("presence_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

#[tokio::test]
async fn every_roles_metrics_pass_promtool_after_traffic_and_have_what_dashboards_and_alerts_use() {
    let mut d = Deployment::with_persistence(
        Mode::Cluster,
        &[("PRESENCE_METRICS_TICK_MS", "200".to_owned())],
    )
    .await
    .expect("cluster");
    let mut observer = connect(&d.a, "observer", "female").await.expect("observer");
    let user = connect(&d.b, "ayse", "female").await.expect("user");
    expect_update(&mut observer, "ayse", "online", Duration::from_secs(5))
        .await
        .expect("online");
    let ack = user
        .emit_with_ack(
            "user:status",
            json!({"status": "nonsense"}),
            Duration::from_secs(5),
        )
        .await
        .expect("status ack");
    assert_eq!(ack["ok"], false, "{ack}");
    assert!(
        SioClient::connect(&d.a, json!({"token": "not a token"}))
            .await
            .is_err(),
        "a bad token was admitted"
    );
    user.disconnect().await;
    expect_update(&mut observer, "ayse", "offline", Duration::from_secs(5))
        .await
        .expect("offline");
    // A customer's tab, so the per-customer gauges tick.
    let joined = http(
        "POST",
        &format!("{}/presence/join", d.a),
        &[("Content-Type", "application/json")],
        Some(br#"{"customerId":"shop-1","sessionId":"s-1","tabId":"t-1"}"#),
    )
    .await
    .expect("active-users join");
    assert_eq!(joined.status, 200, "{}", joined.body);
    tokio::time::sleep(Duration::from_millis(800)).await;

    let edge = scrape(&d.edge_admin(0)).await;
    assert!(
        sample(
            &edge,
            r#"presence_handshakes_rejected_total{reason="invalid"}"#
        ) >= Some(1.0),
        "the refused handshake is not counted:\n{edge}"
    );
    promtool_check(&edge);
    let mut exported = edge;
    for role in ["aggregator", "persister"] {
        let admin = d.proc(role).admin.clone();
        let text = scrape(&admin).await;
        promtool_check(&text);
        exported.push_str(&text);
    }
    let missing: Vec<String> = names_used_in_infra()
        .into_iter()
        .filter(|name| {
            !exported.contains(&format!("\n{name}{{")) && !exported.contains(&format!("\n{name} "))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts use metrics no role exports: {missing:?}"
    );
}
