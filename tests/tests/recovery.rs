//! Recovery end to end: the persister killed and restarted, and PostgreSQL (a server of the
//! test's own) stopped for 10 s and restarted, under a running workload. The projection must
//! converge to the live state: `check-online-status` reports no differences.

use std::time::{Duration, Instant};

use presence_e2e::{
    Deployment, Mode, PrivatePostgres, connect, expect_update, http, until_consistent,
};

const WAIT: Duration = Duration::from_secs(5);

async fn ready(admin: &str) -> bool {
    http("GET", &format!("{admin}/readyz"), &[], None)
        .await
        .is_ok_and(|r| r.status == 200)
}

#[tokio::test]
async fn the_projection_converges_after_a_persister_kill_and_a_database_outage() {
    let pg = PrivatePostgres::start().await.unwrap();
    let mut d = Deployment::with_database(Mode::Cluster, &[], pg.url())
        .await
        .unwrap();
    let mut observer = connect(&d.b, "observer", "female").await.unwrap();
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(connect(&d.a, &format!("p{i}"), "female").await.unwrap());
    }
    until_consistent(&d.a, 7, Duration::from_secs(8)).await;

    // The persister vanishes; the workload goes on; it comes back.
    d.proc("persister").kill().await;
    for c in clients.drain(..2) {
        c.disconnect().await;
    }
    for i in 6..9 {
        clients.push(connect(&d.b, &format!("p{i}"), "female").await.unwrap());
    }
    d.kill_and_restart("persister").await.unwrap();
    until_consistent(&d.a, 8, Duration::from_secs(8)).await;

    // PostgreSQL goes away for 10 s. Presence keeps working; the persister reports not ready.
    pg.stop().unwrap();
    let outage = Instant::now();
    for c in clients.drain(..2) {
        c.disconnect().await;
    }
    for i in 9..12 {
        clients.push(connect(&d.a, &format!("p{i}"), "female").await.unwrap());
    }
    expect_update(&mut observer, "p11", "online", WAIT)
        .await
        .unwrap();
    let persister_admin = d.proc("persister").admin.clone();
    let deadline = Instant::now() + WAIT;
    while ready(&persister_admin).await {
        assert!(
            Instant::now() < deadline,
            "the persister still says ready without its database"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    pg.resume().unwrap();

    until_consistent(&d.a, 9, Duration::from_secs(15)).await;
    assert!(
        ready(&persister_admin).await,
        "the persister is not ready again"
    );
}
