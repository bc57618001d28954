//! What a running deployment says about itself: a role's Prometheus counters, and the
//! projection's consistency check (`check-online-status`) polled until it agrees.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::clients::service_token;
use crate::http::{bearer, http};

/// The sum of a metric over all its label sets, from a role's Prometheus text at `admin`.
pub async fn metric_total(admin: &str, name: &str) -> f64 {
    let text = http("GET", &format!("{admin}/metrics"), &[], None)
        .await
        .map(|r| r.body)
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Polls `check-online-status` on `edge` (with a service token) until the projection is
/// consistent with `live` users online and no differences; panics after `within`.
pub async fn until_consistent(edge: &str, live: u64, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    let mut last = None;
    while std::time::Instant::now() < deadline {
        let answer = http(
            "GET",
            &format!("{edge}/api/check-online-status"),
            &[("Authorization", &bearer(&service_token()))],
            None,
        )
        .await;
        if let Ok(r) = answer
            && r.status == 200
        {
            let v = r.json();
            if v["consistent"] == true && v["liveOnline"] == live {
                assert_eq!(v["differences"], serde_json::json!([]));
                return;
            }
            last = Some(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("projection never converged to {live} online users: {last:?}");
}

/// The partitions with current figures on `edge`'s `/api/health`: partition -> (owner, epoch).
pub async fn partition_owners(edge: &str) -> BTreeMap<u64, (String, u64)> {
    let Ok(r) = http("GET", &format!("{edge}/api/health"), &[], None).await else {
        return BTreeMap::new();
    };
    let v = r.json();
    v["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"] == "ok")
        .filter_map(|p| {
            Some((
                p["partition"].as_u64()?,
                (p["owner"].as_str()?.to_owned(), p["epoch"].as_u64()?),
            ))
        })
        .collect()
}

/// Waits until each of the `count` partitions has current figures on `edge` (an owner that
/// ticks); panics after `within`.
pub async fn until_all_owned(edge: &str, count: usize, within: Duration) {
    let started = std::time::Instant::now();
    while partition_owners(edge).await.len() < count {
        assert!(
            started.elapsed() < within,
            "partitions without an owner after {within:?}: {:?}",
            partition_owners(edge).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The event-log sequence of every partition's last tick on `edge`'s `/api/health`.
pub async fn partition_seqs(edge: &str) -> BTreeMap<u64, u64> {
    let Ok(r) = http("GET", &format!("{edge}/api/health"), &[], None).await else {
        return BTreeMap::new();
    };
    r.json()["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["partition"].as_u64()?, p["seq"].as_u64()?)))
        .collect()
}
