//! The core presence path end to end: real `presence` processes, real NATS JetStream (in
//! cluster mode), real Socket.IO clients. Every scenario runs against an aggregator with two
//! edges and against `presence standalone`.

use std::time::{Duration, Instant};

use presence_e2e::{
    Deployment, HEARTBEAT_TIMEOUT_MS, Mode, SWEEP_INTERVAL_MS, connect, expect_update, token,
};
use presence_sio_client::{SioClient, SioError};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

async fn female_observer_on_b_sees_a_male_user_on_a_come_online_go_live_and_leave(mode: Mode) {
    let d = Deployment::start(mode, &[]).await.unwrap();
    let mut observer = connect(&d.b, "fatma", "female").await.unwrap();
    let ali = connect(&d.a, "ali", "male").await.unwrap();
    let update = expect_update(&mut observer, "ali", "online", WAIT)
        .await
        .unwrap();
    assert_eq!(update["online"], true);

    let ack = ali
        .emit_with_ack(
            "user:status",
            json!({"status": "live", "details": {"title": "evening stream"}}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(ack, json!({"ok": true}));
    let update = expect_update(&mut observer, "ali", "live", WAIT)
        .await
        .unwrap();
    assert_eq!(update["details"]["title"], "evening stream");

    ali.disconnect().await;
    let update = expect_update(&mut observer, "ali", "offline", WAIT)
        .await
        .unwrap();
    assert_eq!(update["online"], false);
    assert!(update["lastSeen"].is_string(), "lastSeen missing: {update}");
}

async fn a_male_observer_hears_nothing_about_male_users(mode: Mode) {
    let d = Deployment::start(mode, &[]).await.unwrap();
    let mut observer = connect(&d.b, "mehmet", "male").await.unwrap();
    let ali = connect(&d.a, "ali", "male").await.unwrap();
    ali.emit_with_ack("user:status", json!({"status": "in_call"}), WAIT)
        .await
        .unwrap();
    // While ali is online and in a call, a query cannot reveal him either.
    let _ayse = connect(&d.a, "ayse", "female").await.unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    let ack = loop {
        let ack = observer
            .emit_with_ack("presence:query", json!({"userIds": ["ali", "ayse"]}), WAIT)
            .await
            .unwrap();
        if ack["presence"][1]["online"] == true || Instant::now() > deadline {
            break ack;
        }
        seen.extend(observer.drain_for(Duration::from_millis(50)).await);
    };
    assert_eq!(ack["ok"], true);
    assert_eq!(
        ack["presence"][1]["online"], true,
        "ayse never came online: {ack}"
    );
    assert_eq!(
        ack["presence"][0]["online"], false,
        "ali was revealed: {ack}"
    );
    assert_eq!(
        ack["presence"][0]["status"], "offline",
        "ali was revealed: {ack}"
    );
    ali.disconnect().await;
    // A female user is announced to him after all of ali's changes (changes are delivered
    // in order), so everything about ali would have arrived by then. Every event since the
    // observer connected is kept and checked.
    let _zeynep = connect(&d.a, "zeynep", "female").await.unwrap();
    let until = Instant::now() + WAIT;
    while !seen.iter().any(|(_, v)| v["userId"] == "zeynep") && Instant::now() < until {
        seen.extend(observer.drain_for(Duration::from_millis(100)).await);
    }
    seen.extend(observer.drain_for(Duration::from_millis(300)).await);
    assert!(
        seen.iter()
            .any(|(_, v)| v["userId"] == "ayse" && v["online"] == true),
        "the male observer was not told about female users: {seen:?}"
    );
    assert!(
        seen.iter().any(|(_, v)| v["userId"] == "zeynep"),
        "zeynep never announced: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|(_, v)| v["userId"] == "ali" || v["userId"] == "mehmet"),
        "male observer was told about male users: {seen:?}"
    );
}

async fn a_silent_client_is_shown_offline_after_timeout_and_sweep_not_before(mode: Mode) {
    let d = Deployment::start(mode, &[]).await.unwrap();
    let mut observer = connect(&d.b, "fatma", "female").await.unwrap();
    let mut silent = connect(&d.a, "selin", "female").await.unwrap();
    expect_update(&mut observer, "selin", "online", WAIT)
        .await
        .unwrap();
    // One last heartbeat, acknowledged, then silence with the socket still open.
    silent.stop_heartbeat();
    silent
        .emit_with_ack("user:heartbeat", json!(null), WAIT)
        .await
        .unwrap();
    let last_beat = Instant::now();
    let limit = Duration::from_millis(HEARTBEAT_TIMEOUT_MS + SWEEP_INTERVAL_MS);
    expect_update(&mut observer, "selin", "offline", limit + WAIT)
        .await
        .unwrap();
    // The edge stamped the beat before its ack reached us: allow that round trip.
    let after = last_beat.elapsed() + Duration::from_millis(50);
    assert!(
        after >= Duration::from_millis(HEARTBEAT_TIMEOUT_MS),
        "swept {after:?} after the last heartbeat, before the {HEARTBEAT_TIMEOUT_MS} ms timeout"
    );
    drop(silent);
}

async fn a_user_connected_twice_stays_online_when_one_connection_closes(mode: Mode) {
    let d = Deployment::start(mode, &[]).await.unwrap();
    let mut observer = connect(&d.b, "fatma", "female").await.unwrap();
    let phone = connect(&d.a, "ayse", "female").await.unwrap();
    expect_update(&mut observer, "ayse", "online", WAIT)
        .await
        .unwrap();
    let web = connect(&d.b, "ayse", "female").await.unwrap();
    phone.disconnect().await;
    // Past a whole sweep cycle, ayse must still be online and never reported offline.
    let seen = observer
        .drain_for(Duration::from_millis(
            HEARTBEAT_TIMEOUT_MS + 2 * SWEEP_INTERVAL_MS,
        ))
        .await;
    assert!(
        !seen
            .iter()
            .any(|(_, v)| v["userId"] == "ayse" && v["online"] == false),
        "ayse flapped offline: {seen:?}"
    );
    let ack = observer
        .emit_with_ack("presence:query", json!({"userIds": ["ayse"]}), WAIT)
        .await
        .unwrap();
    assert_eq!(ack["presence"][0]["status"], "online");
    web.disconnect().await;
    expect_update(&mut observer, "ayse", "offline", WAIT)
        .await
        .unwrap();
}

async fn refused_handshakes_say_why(mode: Mode) {
    let d = Deployment::start(mode, &[]).await.unwrap();
    let refusal = |r: Result<SioClient, SioError>| match r {
        Err(SioError::ConnectError(message)) => message,
        Err(other) => panic!("expected connect_error, got {other}"),
        Ok(_) => panic!("connection was accepted"),
    };
    let missing = refusal(SioClient::connect(&d.a, json!({})).await);
    assert!(missing.contains("authentication required"), "{missing}");
    let forged = refusal(SioClient::connect(&d.a, json!({"token": "a.b.c"})).await);
    assert!(forged.starts_with("invalid token"), "{forged}");
    let expired_claims = presence_auth::Claims {
        sub: "ali".into(),
        exp: 1_000,
        ..Default::default()
    };
    let expired =
        presence_auth::sign_hs256(&expired_claims, presence_e2e::SECRET.as_bytes()).unwrap();
    let expired = refusal(SioClient::connect(&d.a, json!({"token": expired})).await);
    assert!(expired.contains("expired"), "{expired}");
    let insecure =
        refusal(SioClient::connect(&d.a, json!({"userId": "ali", "gender": "male"})).await);
    assert!(
        insecure.contains("SOCKET_ALLOW_INSECURE_USERID"),
        "{insecure}"
    );
    // The edge is still serving.
    assert!(
        SioClient::connect(&d.a, json!({"token": token("ali", "male")}))
            .await
            .is_ok()
    );
}

async fn bad_events_are_answered_with_specific_errors(mode: Mode) {
    let d = Deployment::start(mode, &[]).await.unwrap();
    let client = connect(&d.a, "ali", "male").await.unwrap();
    let cases = [
        ("user:status", json!({"status": "away"}), "unknown status"),
        ("user:status", json!({"status": "offline"}), "disconnecting"),
        ("user:status", json!("live"), "expected {status"),
        (
            "user:status",
            json!({"status": "live", "details": [1]}),
            "JSON object",
        ),
        ("presence:query", json!({"users": []}), "expected {userIds"),
        (
            "presence:query",
            json!({"userIds": ["ok", ""]}),
            "userIds[1]",
        ),
    ];
    for (event, data, expected) in cases {
        let ack = client
            .emit_with_ack(event, data.clone(), WAIT)
            .await
            .unwrap();
        assert_eq!(ack["ok"], false, "{event} {data} was accepted");
        let error = ack["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(expected),
            "{event} {data}: {error:?} lacks {expected:?}"
        );
    }
    let too_many: Vec<String> = (0..501).map(|i| format!("u{i}")).collect();
    let ack = client
        .emit_with_ack("presence:query", json!({"userIds": too_many}), WAIT)
        .await
        .unwrap();
    assert!(
        ack["error"]
            .as_str()
            .unwrap_or_default()
            .contains("at most 500")
    );
}

async fn insecure_user_ids_work_only_in_development_with_the_flag(mode: Mode) {
    let env = [
        ("PRESENCE_ENV", "development".to_owned()),
        ("SOCKET_ALLOW_INSECURE_USERID", "true".to_owned()),
    ];
    let d = Deployment::start(mode, &env).await.unwrap();
    let mut observer = connect(&d.b, "fatma", "female").await.unwrap();
    let _dev = SioClient::connect(&d.a, json!({"userId": "dev-user", "gender": "male"}))
        .await
        .unwrap();
    expect_update(&mut observer, "dev-user", "online", WAIT)
        .await
        .unwrap();
}

macro_rules! in_both_modes {
    ($($scenario:ident),* $(,)?) => {
        mod cluster {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(presence_e2e::Mode::Cluster).await;
                }
            )*
        }
        mod standalone {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(presence_e2e::Mode::Standalone).await;
                }
            )*
        }
    };
}

in_both_modes!(
    female_observer_on_b_sees_a_male_user_on_a_come_online_go_live_and_leave,
    a_male_observer_hears_nothing_about_male_users,
    a_silent_client_is_shown_offline_after_timeout_and_sweep_not_before,
    a_user_connected_twice_stays_online_when_one_connection_closes,
    refused_handshakes_say_why,
    bad_events_are_answered_with_specific_errors,
    insecure_user_ids_work_only_in_development_with_the_flag,
);
