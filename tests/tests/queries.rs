//! The presence API for backends, user search and check-online-status, end to end against
//! real processes, a real NATS JetStream and a real PostgreSQL.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use presence_e2e::{Deployment, Mode, bearer, connect, expect_update, http, service_token, token};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

async fn get(url: &str, token: &str) -> presence_e2e::HttpResponse {
    http("GET", url, &[("Authorization", &bearer(token))], None)
        .await
        .unwrap()
}

async fn send(method: &str, url: &str, token: &str, body: Value) -> presence_e2e::HttpResponse {
    http(
        method,
        url,
        &[("Authorization", &bearer(token))],
        Some(body.to_string().as_bytes()),
    )
    .await
    .unwrap()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn search_matches_every_character_literally() {
    let d = Deployment::with_persistence(Mode::Standalone, &[])
        .await
        .unwrap();
    let service = service_token();
    let names = [
        ("u1", "100% real"),
        ("u2", "under_score"),
        ("u3", "back\\slash"),
        ("u4", "dot.*star"),
        ("u5", "O'Brien"),
        ("u6", "Ayşe Yılmaz"),
        ("u7", "plain"),
        ("u8", "percent%%double"),
        ("u9", "[brackets]"),
        ("u10", "caret^dollar$"),
        ("u11", "Robert'); DROP TABLE users;--"),
        ("u12", "underXscore"),
    ];
    for (id, name) in names {
        let r = send(
            "PUT",
            &format!("{}/api/users/{id}", d.a),
            &service,
            json!({"username": name, "gender": "female"}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let caller = token("searcher", "female");
    let cases: Vec<(&str, &[&str])> = vec![
        ("%", &["100% real", "percent%%double"]),
        ("%%", &["percent%%double"]),
        ("_", &["under_score"]),
        ("r_s", &["under_score"]),
        ("\\", &["back\\slash"]),
        ("\\s", &["back\\slash"]),
        (".*", &["dot.*star"]),
        ("*", &["dot.*star"]),
        ("'", &["O'Brien", "Robert'); DROP TABLE users;--"]),
        ("'; drop table users; --", &[]),
        ("[", &["[brackets]"]),
        ("[a-z]", &[]),
        ("^", &["caret^dollar$"]),
        ("$", &["caret^dollar$"]),
        (")", &["Robert'); DROP TABLE users;--"]),
        ("ayşe", &["Ayşe Yılmaz"]),
        ("yılmaz", &["Ayşe Yılmaz"]),
        ("PLAIN", &["plain"]),
        ("nobody", &[]),
    ];
    for (q, expected) in &cases {
        let r = get(
            &format!("{}/api/users/search?q={}", d.a, percent_encode(q)),
            &caller,
        )
        .await;
        assert_eq!(r.status, 200, "q={q:?}: {}", r.body);
        let found: BTreeSet<String> = r.json()["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_owned())
            .collect();
        let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(found, expected, "q={q:?}");
        for u in r.json()["users"].as_array().unwrap() {
            assert!(
                u["presence"]["status"].is_string(),
                "results carry presence: {u}"
            );
        }
    }
    for (q, why) in [
        ("", "required"),
        ("   ", "required"),
        (&"x".repeat(101)[..], "longer than 100"),
        ("a\0b", "NUL"),
    ] {
        let r = get(
            &format!("{}/api/users/search?q={}", d.a, percent_encode(q)),
            &caller,
        )
        .await;
        assert_eq!(r.status, 400, "q={q:?}");
        assert!(
            r.json()["message"].as_str().unwrap().contains(why),
            "q={q:?}: {}",
            r.body
        );
    }
    let r = get(&format!("{}/api/users/search", d.a), &caller).await;
    assert_eq!(r.status, 400);
    // The table is still there, and so is everyone in it.
    let r = get(&format!("{}/api/users/search?q=r", d.a), &caller).await;
    assert_eq!(r.json()["users"].as_array().unwrap().len(), 9, "{}", r.body);
}

#[tokio::test]
async fn backends_query_presence_with_visibility_and_set_statuses() {
    let d = Deployment::with_persistence(Mode::Cluster, &[])
        .await
        .unwrap();
    let mut fatma = connect(&d.b, "fatma", "female").await.unwrap();
    let ali = connect(&d.a, "ali", "male").await.unwrap();
    let _ayse = connect(&d.a, "ayse", "female").await.unwrap();
    expect_update(&mut fatma, "ali", "online", WAIT)
        .await
        .unwrap();
    expect_update(&mut fatma, "ayse", "online", WAIT)
        .await
        .unwrap();
    let gone = connect(&d.a, "gone", "female").await.unwrap();
    expect_update(&mut fatma, "gone", "online", WAIT)
        .await
        .unwrap();
    gone.disconnect().await;
    expect_update(&mut fatma, "gone", "offline", WAIT)
        .await
        .unwrap();

    let as_male = token("mehmet", "male");
    let as_female = token("zeynep", "female");
    // One user: visibility applied, lastSeen served for offline users.
    let r = get(&format!("{}/api/presence/ali", d.a), &as_female).await;
    assert_eq!((r.status, r.json()["online"].clone()), (200, json!(true)));
    let r = get(&format!("{}/api/presence/ali", d.a), &as_male).await;
    assert_eq!(r.json()["online"], false, "a male caller saw a male user");
    let r = get(&format!("{}/api/presence/gone", d.b), &as_female).await;
    assert_eq!(r.json()["status"], "offline");
    assert!(r.json()["lastSeen"].is_string(), "{}", r.body);

    // Many at once.
    let r = send(
        "POST",
        &format!("{}/api/presence/batch", d.a),
        &as_male,
        json!({"userIds": ["ali", "ayse", "gone", "nobody"]}),
    )
    .await;
    let online: Vec<bool> = r.json()["presence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["online"] == true)
        .collect();
    assert_eq!(online, [false, true, false, false]);

    // The online list, paged, visibility applied.
    let r = get(&format!("{}/api/presence/online?limit=2", d.a), &as_female).await;
    let page = r.json();
    let first: Vec<&str> = page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_str().unwrap())
        .collect();
    assert_eq!(first, ["ali", "ayse"]);
    assert_eq!(page["next"], "ayse");
    let r = get(
        &format!("{}/api/presence/online?limit=2&after=ayse", d.a),
        &as_female,
    )
    .await;
    let rest: Vec<String> = r.json()["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rest, ["fatma"]);
    assert_eq!(r.json()["next"], Value::Null);
    let r = get(&format!("{}/api/presence/online", d.a), &as_male).await;
    let seen: Vec<String> = r.json()["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_str().unwrap().to_owned())
        .collect();
    assert!(!seen.iter().any(|u| u == "ali"), "{seen:?}");
    assert!(seen.iter().any(|u| u == "ayse"), "{seen:?}");

    // A service sets a status with details; everyone allowed is told.
    let service = service_token();
    let r = send(
        "PUT",
        &format!("{}/api/presence/ali/status", d.b),
        &service,
        json!({"status": "live", "details": {"streamId": "s-9"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let update = expect_update(&mut fatma, "ali", "live", WAIT)
        .await
        .unwrap();
    assert_eq!(update["details"]["streamId"], "s-9");
    // Not for an offline user, not with a person's token, not with a bad status.
    let r = send(
        "PUT",
        &format!("{}/api/presence/gone/status", d.b),
        &service,
        json!({"status": "live"}),
    )
    .await;
    assert_eq!(r.status, 409);
    let r = send(
        "PUT",
        &format!("{}/api/presence/ali/status", d.b),
        &as_female,
        json!({"status": "live"}),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = send(
        "PUT",
        &format!("{}/api/presence/ali/status", d.b),
        &service,
        json!({"status": "away"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("unknown status")
    );
    // No token, a bad token.
    let r = http("GET", &format!("{}/api/presence/ali", d.a), &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = get(&format!("{}/api/presence/ali", d.a), "not.a.jwt").await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid token")
    );
    drop(ali);
}

#[tokio::test]
async fn check_online_status_reports_no_differences_once_the_projection_caught_up() {
    let d = Deployment::with_persistence(Mode::Cluster, &[])
        .await
        .unwrap();
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(
            connect(
                if i % 2 == 0 { &d.a } else { &d.b },
                &format!("c{i}"),
                "female",
            )
            .await
            .unwrap(),
        );
    }
    for c in clients.drain(..3) {
        c.disconnect().await;
    }
    let url = format!("{}/api/check-online-status", d.a);
    // Protected outside development.
    let r = http("GET", &url, &[], None).await.unwrap();
    assert_eq!(r.status, 401);
    let r = get(&url, &token("c5", "female")).await;
    assert_eq!(r.status, 403);
    let service = service_token();
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let r = get(&url, &service).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        if v["consistent"] == true && v["liveOnline"] == 3 {
            assert_eq!(v["databaseOnline"], 3);
            assert_eq!(v["differences"], json!([]));
            break;
        }
        assert!(Instant::now() < deadline, "never consistent: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
