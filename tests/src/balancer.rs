//! A load balancer in front of edges: a real HAProxy started with a configuration of its
//! own, as the tests of sticky sessions and edge failover need.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::process::unique_namespace;

/// A real HAProxy (Debian's) in front of edges: sticky by client address (Socket.io polling),
/// WebSocket upgrades passed through, an edge out of rotation when its `/readyz` fails.
pub struct Balancer {
    child: Child,
    dir: PathBuf,
    /// `http://addr` of the balancer.
    pub url: String,
}

impl Balancer {
    /// Starts HAProxy in front of `edges`: (public URL, admin URL) pairs, sticky by client
    /// address.
    pub async fn start(edges: &[(String, String)]) -> anyhow::Result<Self> {
        Self::start_with(edges, "source").await
    }

    /// As [`Balancer::start`], with another `balance` algorithm (`leastconn` spreads clients
    /// that all come from one address, WebSocket-only, over the edges).
    pub async fn start_with(edges: &[(String, String)], balance: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("lb-{}", unique_namespace()));
        std::fs::create_dir_all(&dir)?;
        let mut servers = String::new();
        for (i, (public, admin)) in edges.iter().enumerate() {
            let addr = public.trim_start_matches("http://");
            let check_port = admin.rsplit(':').next().context("admin URL without port")?;
            servers.push_str(&format!("    server edge{i} {addr} port {check_port}\n"));
        }
        let config = format!(
            "global\n    maxconn 9000\n\ndefaults\n    mode http\n    maxconn 9000\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n    timeout tunnel 1h\n    option forwardfor\n    default-server check inter 200ms fall 1 rise 1\n\nfrontend public\n    bind 127.0.0.1:{port}\n    default_backend edges\n\nbackend edges\n    balance {balance}\n    option httpchk GET /readyz\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config)?;
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting haproxy (apt-get install haproxy)")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if std::time::Instant::now() > deadline {
                bail!("haproxy did not listen on {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
