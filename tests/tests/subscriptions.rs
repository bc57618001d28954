//! Delivery by interest and catch-up, on JetStream with two edges, driven by the stock
//! `socket.io-client` (`tests/node/subscriptions.mjs`): a subscriptions socket gets updates for
//! exactly its set and nothing else, across edges; a male viewer subscribed to a male user
//! gets an offline snapshot and no pushes; the limit and malformed ids are refused; a batch
//! socket receives coalesced arrays (10 status changes of one user in a window: one entry, the
//! last status); after a reconnect with its cursor a client receives exactly what it missed.
//! Then a cursor older than what a newly started edge holds is answered with the full state.

use std::path::Path;
use std::time::Duration;

use presence_e2e::{Deployment, Mode, connect, token};
use serde_json::{Value, json};

#[tokio::test]
async fn subscriptions_batches_and_catch_up_with_the_stock_client_across_two_edges() {
    let limit = 5;
    let env = [
        ("PRESENCE_MAX_SUBSCRIPTIONS", limit.to_string()),
        // Long enough that ten acked statuses in a row fall within one window.
        ("PRESENCE_BATCH_MS", "1000".to_owned()),
    ];
    let mut d = Deployment::start(Mode::Cluster, &env).await.unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    assert!(
        dir.join("node_modules/socket.io-client").exists(),
        "socket.io-client is not installed: run `make interop-deps` (npm ci in tests/node)"
    );
    let tokens: serde_json::Map<String, Value> = [
        ("fatma", "female"),
        ("mehmet", "male"),
        ("zeynep", "female"),
        ("ali", "male"),
        ("ayse", "female"),
        ("can", "male"),
    ]
    .into_iter()
    .map(|(user, gender)| (user.to_owned(), Value::String(token(user, gender))))
    .collect();
    let output = tokio::process::Command::new("node")
        .arg(dir.join("subscriptions.mjs"))
        .args([&d.a, &d.b])
        .arg(Value::Object(tokens).to_string())
        .arg(limit.to_string())
        .output()
        .await
        .expect("running node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let early: Value = serde_json::from_str(stdout.trim()).expect("the script's result");
    let early = early["early"].clone();
    assert!(early.is_string(), "{early}");

    // An edge started after all that holds nothing from before it started: a cursor from
    // then gets the whole state, and the cursor of that answer is honoured.
    let n = d.add("edge", &[]).await.unwrap();
    let (url, _) = d.edges()[n].clone();
    let viewer = connect(&url, "viewer", "female").await.unwrap();
    let ayse = connect(&d.a, "ayse", "female").await.unwrap();
    let mut full = Value::Null;
    for _ in 0..100 {
        full = viewer
            .emit_with_ack(
                "presence:sync",
                json!({ "since": early }),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let online: Vec<&str> = full["presence"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["online"] == true)
            .filter_map(|p| p["userId"].as_str())
            .collect();
        if online.contains(&"ayse") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(full["ok"], true, "{full}");
    assert_eq!(
        full["full"], true,
        "a cursor from before the edge started: {full}"
    );
    let online: Vec<&str> = full["presence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["userId"].as_str())
        .collect();
    assert!(online.contains(&"ayse"), "the online users: {full}");
    assert!(
        full["presence"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["online"] == true),
        "the full state of a broadcast socket is who is online: {full}"
    );
    let fresh = viewer
        .emit_with_ack(
            "presence:sync",
            json!({ "since": full["cursor"] }),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(fresh["ok"], true, "{fresh}");
    assert!(fresh.get("full").is_none(), "a fresh cursor: {fresh}");
    ayse.disconnect().await;
    viewer.disconnect().await;
}
