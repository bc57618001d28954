//! The replay CLI against a real cluster: the projection rebuilt from the stream equals the
//! live one, and a user's timeline lists a scripted session's events in order.

use std::time::Duration;

use presence_e2e::{
    Deployment, Mode, connect, expect_update, nats_url, presence_bin, until_consistent,
};
use presence_events::{Partitions, TenantId, UserId};
use serde_json::json;
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(5);

async fn replay(d: &Deployment, args: &[&str]) -> String {
    let out = tokio::process::Command::new(presence_bin().unwrap())
        .arg("replay")
        .args(args)
        .env("NATS_URL", nats_url().unwrap())
        .env("PRESENCE_NAMESPACE", d.namespace().unwrap())
        .env("DATABASE_URL", d.database_url.as_deref().unwrap())
        .env(
            "PRESENCE_HEARTBEAT_TIMEOUT_MS",
            presence_e2e::HEARTBEAT_TIMEOUT_MS.to_string(),
        )
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "replay {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

type Rows = Vec<(String, String, bool, Option<i64>, i64)>;

async fn rows(pool: &PgPool) -> Rows {
    sqlx::query_as(
        "SELECT user_id, status, online, (extract(epoch from last_seen) * 1000)::int8, seq
         FROM presence ORDER BY user_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_rebuilt_projection_equals_the_live_one_and_timelines_are_in_order() {
    let d = Deployment::with_persistence(Mode::Cluster, &[])
        .await
        .unwrap();
    let pool = PgPool::connect(d.database_url.as_deref().unwrap())
        .await
        .unwrap();
    let mut observer = connect(&d.b, "observer", "female").await.unwrap();
    let _other = connect(&d.b, "other", "male").await.unwrap();
    // The scripted session.
    let tl = connect(&d.a, "tl", "female").await.unwrap();
    tl.emit_with_ack(
        "user:status",
        json!({"status": "live", "details": {"title": "replayed"}}),
        WAIT,
    )
    .await
    .unwrap();
    expect_update(&mut observer, "tl", "live", WAIT)
        .await
        .unwrap();
    tl.disconnect().await;
    expect_update(&mut observer, "tl", "offline", WAIT)
        .await
        .unwrap();
    until_consistent(&d.a, 2, Duration::from_secs(8)).await;
    // The consistency check reads the online rows; the offline one may land a moment later.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut live = rows(&pool).await;
    while live.len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        live = rows(&pool).await;
    }
    assert_eq!(live.len(), 3, "{live:?}");

    let dry = replay(&d, &["rebuild", "--dry-run"]).await;
    assert!(dry.contains("dry run: 0 of 3 rows would change"), "{dry}");

    sqlx::query("TRUNCATE presence")
        .execute(&pool)
        .await
        .unwrap();
    let dry = replay(&d, &["rebuild", "--dry-run"]).await;
    assert!(dry.contains("dry run: 3 of 3 rows would change"), "{dry}");
    // Partition by partition, the same rows (each user in exactly one partition).
    let mut per_partition = 0;
    for p in 0..4 {
        let dry = replay(&d, &["--partition", &p.to_string(), "rebuild", "--dry-run"]).await;
        let n: usize = dry
            .split("dry run: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {dry}"));
        per_partition += n;
    }
    assert_eq!(per_partition, 3, "rows over the 4 partitions");
    let rebuilt = replay(&d, &["rebuild"]).await;
    assert!(rebuilt.contains("rebuilt 3 rows"), "{rebuilt}");
    assert_eq!(
        rows(&pool).await,
        live,
        "the rebuilt projection differs from the live one"
    );
    until_consistent(&d.a, 2, Duration::from_secs(8)).await;

    let timeline = replay(&d, &["timeline", "--user", "tl"]).await;
    let position = |needle: &str| {
        timeline
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} missing from the timeline:\n{timeline}"))
    };
    let steps = [
        position("event   join"),
        position("change  tl -> online"),
        position("event   status"),
        position("change  tl -> live"),
        position("event   leave"),
        position("change  tl -> offline"),
    ];
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "out of order: {steps:?}\n{timeline}"
    );
    assert!(
        timeline.contains("replayed"),
        "status details missing:\n{timeline}"
    );
    assert!(
        !timeline.contains("other"),
        "another user's events leaked in:\n{timeline}"
    );
    // Replaying only the user's partition tells the same story.
    let partition = Partitions::new(4)
        .unwrap()
        .of_user(&TenantId::default_tenant(), &UserId::parse("tl").unwrap());
    let alone = replay(
        &d,
        &[
            "--partition",
            &partition.to_string(),
            "timeline",
            "--user",
            "tl",
        ],
    )
    .await;
    assert_eq!(alone, timeline, "the partition's replay differs");
}
