//! Token lifetime on live connections: a socket is closed (told `auth:expired`) when its
//! token's `exp` passes, unless the client sent `auth:refresh` with a fresh token for the same
//! user; `nbf` is checked, `aud` when configured, and an oversized token is refused. Keys
//! chosen by `kid` rotate from a reloaded key file, without a restart or a disconnect.

use std::time::Duration;

use presence_auth::{Claims, sign_hs256, sign_hs256_with_kid};
use presence_e2e::{Deployment, Mode, SECRET, connect, expect_update, metric_total, now_secs};
use presence_sio_client::{SioClient, SioError};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

fn claims(user: &str, exp: u64) -> Claims {
    Claims {
        sub: user.to_owned(),
        exp,
        gender: Some("female".to_owned()),
        ..Default::default()
    }
}

fn signed(claims: &Claims) -> String {
    sign_hs256(claims, SECRET.as_bytes()).expect("signing a test token")
}

async fn connect_with(url: &str, token: String) -> Result<SioClient, SioError> {
    SioClient::connect(url, json!({ "token": token })).await
}

fn refusal(result: Result<SioClient, SioError>) -> String {
    match result {
        Err(SioError::ConnectError(message)) => message,
        Err(other) => panic!("expected connect_error, got {other}"),
        Ok(_) => panic!("the connection was accepted"),
    }
}

#[tokio::test]
async fn a_connection_is_closed_with_a_reason_when_its_token_expires() {
    let d = Deployment::start(Mode::Standalone, &[]).await.unwrap();
    let mut observer = connect(&d.a, "observer", "female").await.unwrap();
    let mut user = connect_with(&d.a, signed(&claims("ayse", now_secs() + 2)))
        .await
        .unwrap();
    user.start_heartbeat(Duration::from_millis(500));
    expect_update(&mut observer, "ayse", "online", WAIT)
        .await
        .unwrap();

    let notice = user
        .wait_for("auth:expired", Duration::from_secs(6), |_| true)
        .await
        .expect("no auth:expired within 6 s of a token expiring in 2 s");
    assert_eq!(notice["reason"], "token_expired", "{notice}");
    tokio::time::timeout(WAIT, user.closed())
        .await
        .expect("the socket stayed open after its token expired");
    expect_update(&mut observer, "ayse", "offline", WAIT)
        .await
        .unwrap();
    assert!(metric_total(&d.edge_admin(0), "presence_connections_expired_total").await >= 1.0);
}

#[tokio::test]
async fn a_token_refreshed_in_time_keeps_the_connection_and_only_for_the_same_user() {
    let d = Deployment::start(Mode::Standalone, &[]).await.unwrap();
    let mut user = connect_with(&d.a, signed(&claims("ayse", now_secs() + 2)))
        .await
        .unwrap();
    user.start_heartbeat(Duration::from_millis(500));

    let other = user
        .emit_with_ack(
            "auth:refresh",
            json!({"token": signed(&claims("ali", now_secs() + 3600))}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(other["ok"], false, "{other}");
    assert!(
        other["error"]
            .as_str()
            .unwrap_or_default()
            .contains("another user"),
        "{other}"
    );
    let stale = user
        .emit_with_ack(
            "auth:refresh",
            json!({"token": signed(&claims("ayse", 1_000))}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(stale["ok"], false, "{stale}");
    let malformed = user
        .emit_with_ack("auth:refresh", json!({"tok": 1}), WAIT)
        .await
        .unwrap();
    assert_eq!(malformed["ok"], false, "{malformed}");

    let fresh = user
        .emit_with_ack(
            "auth:refresh",
            json!({"token": signed(&claims("ayse", now_secs() + 3600))}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(fresh, json!({"ok": true}));
    // Well past the first token's exp: still connected, never told it expired.
    let seen = user.drain_for(Duration::from_secs(4)).await;
    assert!(
        seen.iter().all(|(name, _)| name != "auth:expired"),
        "{seen:?}"
    );
    assert!(!user.is_closed(), "the refreshed connection was closed");
    let ack = user
        .emit_with_ack("presence:query", json!({"userIds": ["ayse"]}), WAIT)
        .await
        .unwrap();
    assert_eq!(ack["presence"][0]["online"], true, "{ack}");
}

#[tokio::test]
async fn tokens_not_yet_valid_oversized_or_for_another_audience_are_refused() {
    let d = Deployment::start(Mode::Standalone, &[("JWT_AUDIENCE", "presence".to_owned())])
        .await
        .unwrap();
    let in_an_hour = now_secs() + 3600;

    let mut later = claims("ayse", in_an_hour);
    later.aud = Some("presence".to_owned());
    later.nbf = Some(now_secs() + 1800);
    let message = refusal(connect_with(&d.a, signed(&later)).await);
    assert!(message.contains("not valid yet"), "{message}");

    let mut huge = claims("ayse", in_an_hour);
    huge.aud = Some("presence".to_owned());
    huge.username = Some("x".repeat(8 * 1024));
    let message = refusal(connect_with(&d.a, signed(&huge)).await);
    assert!(message.contains("longer than"), "{message}");

    let mut billing = claims("ayse", in_an_hour);
    billing.aud = Some("billing".to_owned());
    let message = refusal(connect_with(&d.a, signed(&billing)).await);
    assert!(message.contains("audience"), "{message}");

    let mut ours = claims("ayse", in_an_hour);
    ours.aud = Some("presence".to_owned());
    let client = connect_with(&d.a, signed(&ours)).await.unwrap();
    client.disconnect().await;

    let admin = d.edge_admin(0);
    for reason in ["not_yet_valid", "too_large", "wrong_issuer_or_audience"] {
        let text = presence_e2e::http("GET", &format!("{admin}/metrics"), &[], None)
            .await
            .unwrap()
            .body;
        let series = format!("presence_handshakes_rejected_total{{reason=\"{reason}\"}} 1");
        assert!(text.contains(&series), "{series} not counted:\n{text}");
    }
}

/// A JSON Web Key Set of HS256 keys: `(kid, base64url of the secret)`.
fn key_set(keys: &[(&str, &str)]) -> String {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|(kid, k)| json!({"kty": "oct", "kid": kid, "k": k}))
        .collect();
    json!({ "keys": keys }).to_string()
}

const ONE: (&str, &[u8], &str) = (
    "k1",
    b"rotation-key-one-0123456789abcdef",
    "cm90YXRpb24ta2V5LW9uZS0wMTIzNDU2Nzg5YWJjZGVm",
);
const TWO: (&str, &[u8], &str) = (
    "k2",
    b"rotation-key-two-0123456789abcdef",
    "cm90YXRpb24ta2V5LXR3by0wMTIzNDU2Nzg5YWJjZGVm",
);
const THREE: (&str, &[u8], &str) = (
    "k3",
    b"rotation-key-three-0123456789abcd",
    "cm90YXRpb24ta2V5LXRocmVlLTAxMjM0NTY3ODlhYmNk",
);

fn token_of(key: (&str, &[u8], &str), user: &str) -> String {
    sign_hs256_with_kid(&claims(user, now_secs() + 3600), key.1, key.0).expect("signing")
}

#[tokio::test]
async fn keys_rotate_by_kid_from_the_key_file_without_a_restart_or_a_disconnect() {
    let file = std::env::temp_dir().join(format!("presence-keys-{}.json", uuid::Uuid::now_v7()));
    std::fs::write(&file, key_set(&[(ONE.0, ONE.2), (TWO.0, TWO.2)])).unwrap();
    let d = Deployment::start(
        Mode::Standalone,
        &[("JWT_KEYS_FILE", file.display().to_string())],
    )
    .await
    .unwrap();
    let mut live = connect_with(&d.a, token_of(ONE, "ayse")).await.unwrap();
    live.start_heartbeat(Duration::from_millis(500));
    assert!(
        refusal(connect_with(&d.a, token_of(THREE, "ali")).await).contains("\"k3\""),
        "k3 is not configured yet"
    );

    // Rotation: k1 retired, k3 added.
    std::fs::write(&file, key_set(&[(TWO.0, TWO.2), (THREE.0, THREE.2)])).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let rotated = loop {
        match connect_with(&d.a, token_of(THREE, "ali")).await {
            Ok(client) => break client,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("k3 was not accepted after the key file changed: {e}"),
        }
    };
    let retired = refusal(connect_with(&d.a, token_of(ONE, "ali")).await);
    assert!(
        retired.contains("key id \"k1\" is not (or no longer) accepted"),
        "{retired}"
    );
    assert!(connect_with(&d.a, token_of(TWO, "veli")).await.is_ok());
    // The connection admitted with the retired key lives on until its own exp.
    let ack = live
        .emit_with_ack("presence:query", json!({"userIds": ["ali"]}), WAIT)
        .await
        .expect("the connection of the retired key was closed by the rotation");
    assert_eq!(ack["presence"][0]["online"], true, "{ack}");

    // A broken key file is refused and the keys in use stay.
    std::fs::write(&file, "{not json").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(connect_with(&d.a, token_of(THREE, "zeynep")).await.is_ok());
    let errors = presence_e2e::http("GET", &format!("{}/metrics", d.edge_admin(0)), &[], None)
        .await
        .unwrap()
        .body;
    assert!(
        errors.contains("presence_key_reloads_total{outcome=\"error\"} 1"),
        "{errors}"
    );
    drop(rotated);
    let _ = std::fs::remove_file(&file);
}
