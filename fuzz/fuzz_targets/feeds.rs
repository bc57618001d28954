//! What the aggregators publish and every edge follows: presence changes, a customer's
//! metrics, a partition's figures. The first byte picks the decoder; what decodes encodes
//! again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_events::{ClusterStats, PresenceChange, TenantMetrics};

fuzz_target!(|data: &[u8]| {
    let Some((which, bytes)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(change) = PresenceChange::decode(bytes) {
                let again = PresenceChange::decode(&change.encode().expect("encodes"));
                assert_eq!(again.expect("decodes"), change);
            }
        }
        1 => {
            if let Ok(metrics) = TenantMetrics::decode(bytes) {
                let again = TenantMetrics::decode(&metrics.encode().expect("encodes"));
                assert_eq!(again.expect("decodes"), metrics);
            }
        }
        _ => {
            if let Ok(stats) = ClusterStats::decode(bytes) {
                let again = ClusterStats::decode(&stats.encode().expect("encodes"));
                assert_eq!(again.expect("decodes"), stats);
            }
        }
    }
});
