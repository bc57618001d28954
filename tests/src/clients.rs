//! Clients of a deployment: tokens signed with the test secret, Socket.io connections that
//! heartbeat, and waiting for a `presence-update`.

use std::time::Duration;

use anyhow::Context;
use presence_sio_client::{SioClient, SioError};
use serde_json::{Value, json};

use crate::process::SECRET;

/// A token for `user` of `gender`, valid for an hour.
pub fn token(user: &str, gender: &str) -> String {
    let claims = presence_auth::Claims {
        sub: user.to_owned(),
        exp: now_secs() + 3600,
        gender: Some(gender.to_owned()),
        ..Default::default()
    };
    presence_auth::sign_hs256(&claims, SECRET.as_bytes()).expect("signing a test token")
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Milliseconds since the epoch (the clock the observer stamps its updates with).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Connects `user` of `gender` to `url` with a token, heartbeating every second.
pub async fn connect(url: &str, user: &str, gender: &str) -> Result<SioClient, SioError> {
    let mut client = SioClient::connect(url, json!({ "token": token(user, gender) })).await?;
    client.start_heartbeat(Duration::from_millis(500));
    Ok(client)
}

/// Waits for a `presence-update` about `user` with `status`.
pub async fn expect_update(
    client: &mut SioClient,
    user: &str,
    status: &str,
    timeout: Duration,
) -> anyhow::Result<Value> {
    client
        .wait_for("presence-update", timeout, |v| {
            v["userId"] == user && v["status"] == status
        })
        .await
        .with_context(|| format!("no presence-update {user} -> {status} within {timeout:?}"))
}

/// A service-role token of the `default` tenant.
pub fn service_token() -> String {
    let claims = presence_auth::Claims {
        sub: "backend".to_owned(),
        exp: now_secs() + 3600,
        role: Some("service".to_owned()),
        ..Default::default()
    };
    presence_auth::sign_hs256(&claims, SECRET.as_bytes()).expect("signing a test token")
}
