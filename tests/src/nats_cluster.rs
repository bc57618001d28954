//! A 3-node NATS JetStream cluster of a test's own (routes on loopback), on the pinned
//! server (`NATS_SERVER_BIN`, set by `scripts/with-services.sh`, or `.venv-nats`), so a test
//! can SIGKILL a node (the stream leader, a follower) and start it again on its store.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::http::http;

/// One node: its ports, its configuration file and, while it runs, its process.
struct Node {
    name: String,
    client_port: u16,
    monitor_port: u16,
    conf: PathBuf,
    child: Option<Child>,
}

/// A running 3-node cluster; every node is killed and its data removed when dropped.
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn server_bin() -> anyhow::Result<PathBuf> {
    if let Ok(bin) = std::env::var("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-nats/bin/nats-server");
    if local.exists() {
        return Ok(local);
    }
    bail!("no pinned nats-server: run scripts/nats-server.sh (make test does)")
}

impl NatsCluster {
    /// Starts nodes `n1`, `n2`, `n3` and waits until JetStream has a leader.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("nats-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)?;
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push((free_port()?, free_port()?, free_port()?));
        }
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster, _)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, cluster, monitor)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let conf = dir.join(format!("{name}.conf"));
            let store = dir.join(&name);
            std::fs::write(
                &conf,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                     jetstream {{ store_dir: \"{}\", max_file_store: 2G, max_memory_store: 64M }}\n\
                     cluster {{ name: presence-test, listen: 127.0.0.1:{cluster}, routes: [{}] }}\n",
                    store.display(),
                    routes.join(", ")
                ),
            )?;
            nodes.push(Node {
                name,
                client_port: *client,
                monitor_port: *monitor,
                conf,
                child: None,
            });
        }
        let mut cluster = Self { nodes, dir };
        for i in 0..3 {
            cluster.spawn(i)?;
        }
        cluster.until_jetstream(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::File::create(node.conf.with_extension("log"))?;
        node.child = Some(
            Command::new(server_bin()?)
                .arg("-c")
                .arg(&node.conf)
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("starting nats-server")?,
        );
        Ok(())
    }

    /// Every node's URL, comma-separated: `NATS_URL` of the roles.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn jsz(&self, i: usize) -> Option<Value> {
        let url = format!(
            "http://127.0.0.1:{}/jsz?accounts=true&streams=true",
            self.nodes[i].monitor_port
        );
        http("GET", &url, &[], None).await.ok().map(|r| r.json())
    }

    /// Waits until the JetStream meta group has a leader.
    pub async fn until_jetstream(&self, within: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            for i in 0..self.nodes.len() {
                if self.nodes[i].child.is_some()
                    && let Some(v) = self.jsz(i).await
                    && v["meta_cluster"]["leader"]
                        .as_str()
                        .is_some_and(|l| !l.is_empty())
                {
                    return Ok(());
                }
            }
            if started.elapsed() > within {
                bail!("JetStream has no leader after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node leading `stream`, as a running node reports it.
    pub async fn stream_leader(&self, stream: &str) -> Option<String> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                continue;
            }
            let Some(v) = self.jsz(i).await else { continue };
            for account in v["account_details"].as_array().into_iter().flatten() {
                for s in account["stream_detail"].as_array().into_iter().flatten() {
                    if s["name"] == stream
                        && let Some(leader) = s["cluster"]["leader"].as_str()
                    {
                        return Some(leader.to_owned());
                    }
                }
            }
        }
        None
    }

    /// The names of the streams a running node reports without a leader (every stream of
    /// the cluster: its tests' streams and key-value buckets), or `None` when no node answers.
    pub async fn streams_without_leader(&self) -> Option<Vec<String>> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                continue;
            }
            let Some(v) = self.jsz(i).await else { continue };
            let mut leaderless = Vec::new();
            let mut streams = 0;
            for account in v["account_details"].as_array().into_iter().flatten() {
                for s in account["stream_detail"].as_array().into_iter().flatten() {
                    streams += 1;
                    if s["cluster"]["leader"].as_str().is_none_or(str::is_empty) {
                        leaderless.push(s["name"].as_str().unwrap_or_default().to_owned());
                    }
                }
            }
            if streams > 0 {
                return Some(leaderless);
            }
        }
        None
    }

    /// Waits until every stream (and key-value bucket) has a leader again.
    pub async fn until_every_stream_led(&self, within: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let leaderless = self.streams_without_leader().await;
            if leaderless.as_ref().is_some_and(Vec::is_empty) {
                return Ok(());
            }
            if started.elapsed() > within {
                bail!("streams without a leader after {within:?}: {leaderless:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The names of every node.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn index(&self, name: &str) -> anyhow::Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .with_context(|| format!("no node {name}"))
    }

    /// SIGKILLs node `name`.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index(name)?;
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts node `name` again, on its store.
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index(name)?;
        self.spawn(i)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                let _ = child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
