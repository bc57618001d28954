//! Limits on what one client may hold: Socket.io connections per user
//! (`PRESENCE_MAX_CONNECTIONS_PER_USER`); the next one is refused with a `connect_error`
//! saying why, and counted.

use std::time::Duration;

use presence_e2e::{Deployment, Mode, connect};
use presence_sio_client::SioError;

#[tokio::test]
async fn a_user_over_its_connection_limit_is_refused_until_one_closes() {
    let d = Deployment::start(
        Mode::Standalone,
        &[("PRESENCE_MAX_CONNECTIONS_PER_USER", "3".to_owned())],
    )
    .await
    .unwrap();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(&d.a, "ayse", "female").await.unwrap());
    }
    match connect(&d.a, "ayse", "female").await {
        Err(SioError::ConnectError(message)) => assert!(
            message.contains("too many connections for this user (at most 3)"),
            "{message}"
        ),
        Err(other) => panic!("expected connect_error, got {other}"),
        Ok(_) => panic!("the fourth connection of a limit of 3 was admitted"),
    }
    // Other users are not affected.
    let ali = connect(&d.a, "ali", "male").await.unwrap();

    // A closed connection frees its place (once the edge has handled the disconnect: an
    // attempt before that is refused, and counted, like the first).
    open.pop().unwrap().disconnect().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut refused = 1;
    let again = loop {
        match connect(&d.a, "ayse", "female").await {
            Ok(client) => break client,
            Err(_) if std::time::Instant::now() < deadline => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no place freed after a disconnect: {e}"),
        }
    };
    let metrics = presence_e2e::http("GET", &format!("{}/metrics", d.edge_admin(0)), &[], None)
        .await
        .unwrap()
        .body;
    assert!(
        metrics.contains(&format!(
            r#"presence_handshakes_rejected_total{{reason="too_many_connections"}} {refused}"#
        )),
        "the refusal is not counted:\n{metrics}"
    );
    drop((open, ali, again));
}
