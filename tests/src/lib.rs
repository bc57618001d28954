//! Harness of the end-to-end tests: starts real `presence` processes (standalone, or an
//! aggregator and edges against the NATS JetStream at `NATS_URL`), each test in its own
//! namespace so tests run in parallel on one NATS server, and connects real clients.
//!
//! `make test` starts a throwaway `nats-server -js` and sets `NATS_URL`; the binary is
//! `target/<profile>/presence` next to the test executable, or `PRESENCE_BIN`.
//!
//! | module | what |
//! | --- | --- |
//! | [`process`] | the `presence` binary, the test settings, [`Proc`]: one running process |
//! | [`history`] | users who came and went, appended straight into the events stream |
//! | [`deployment`] | [`Mode`] and [`Deployment`]: standalone, or aggregator and two edges |
//! | [`postgres`] | a fresh database, or a PostgreSQL server of a test's own |
//! | [`balancer`] | HAProxy in front of edges |
//! | [`chaos`] | the chaos suite (`make chaos`) |
//! | [`http`](mod@http) | a raw HTTP/1.1 client and [`HttpResponse`] |
//! | [`clients`] | tokens, Socket.io connections, waiting for updates |
//! | [`nats_cluster`] | a 3-node JetStream cluster of a test's own |
//! | [`observer`] | a viewer on the stock `socket.io-client` recording every update |
//! | [`procfs`] | CPU time and memory of a process from `/proc` |
//! | [`readings`] | a role's metrics, the projection's consistency check |
//!
//! Everything a test uses is re-exported here: `use presence_e2e::{Deployment, Mode, connect}`.

pub mod balancer;
pub mod chaos;
pub mod clients;
pub mod deployment;
pub mod history;
pub mod http;
pub mod nats_cluster;
pub mod observer;
pub mod postgres;
pub mod process;
pub mod procfs;
pub mod readings;

pub use balancer::Balancer;
pub use clients::{connect, expect_update, now_ms, now_secs, service_token, token};
pub use deployment::{Deployment, Mode};
pub use history::fill_history;
pub use http::{HttpResponse, bearer, http};
pub use nats_cluster::NatsCluster;
pub use observer::{Observer, Seen};
pub use postgres::{PrivatePostgres, fresh_database};
pub use process::{
    HEARTBEAT_TIMEOUT_MS, Proc, SECRET, SWEEP_INTERVAL_MS, nats_url, presence_bin, unique_namespace,
};
pub use procfs::{cpu_seconds, rss_bytes};
pub use readings::{
    metric_total, partition_owners, partition_seqs, until_all_owned, until_consistent,
};
