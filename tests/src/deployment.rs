//! Whole deployments for a test: one `presence standalone`, or an aggregator (with a
//! persister when persistence is asked for) and two edges on NATS JetStream, each process
//! kept with its environment so a test can kill and restart it.

use anyhow::Context;

use crate::postgres::fresh_database;
use crate::process::{Proc, nats_url, unique_namespace};

/// Which deployment a test runs against.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// One `presence standalone` process serving as both "edges".
    Standalone,
    /// An aggregator and two edges on NATS JetStream.
    Cluster,
}

/// Environment variables of a process.
type Env = Vec<(String, String)>;

/// A running deployment with two public entry points ("edge A" and "edge B").
pub struct Deployment {
    /// Every process with its role and environment, kept alive for the test.
    procs: Vec<(String, Env, Proc)>,
    /// Public URL of edge A.
    pub a: String,
    /// Public URL of edge B (the same process as A in standalone mode).
    pub b: String,
    /// The deployment's own database, when started with persistence.
    pub database_url: Option<String>,
    /// The environment every process starts from.
    base: Env,
}

impl Deployment {
    /// Starts a deployment in `mode` with extra `env` for every process.
    pub async fn start(mode: Mode, env: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::launch(mode, env, None).await
    }

    /// As [`Deployment::start`], with a fresh database and (in cluster mode) a persister.
    pub async fn with_persistence(mode: Mode, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let url = fresh_database().await?;
        Self::launch(mode, env, Some(url)).await
    }

    /// As [`Deployment::with_persistence`], on the database at `url`.
    pub async fn with_database(
        mode: Mode,
        env: &[(&str, String)],
        url: String,
    ) -> anyhow::Result<Self> {
        Self::launch(mode, env, Some(url)).await
    }

    async fn launch(
        mode: Mode,
        env: &[(&str, String)],
        database_url: Option<String>,
    ) -> anyhow::Result<Self> {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        if let Some(url) = &database_url {
            env.push(("DATABASE_URL".into(), url.clone()));
        }
        if matches!(mode, Mode::Cluster) {
            // A test may bring its own NATS (a 3-node cluster).
            if !env.iter().any(|(k, _)| k == "NATS_URL") {
                env.push(("NATS_URL".into(), nats_url()?));
            }
            if !env.iter().any(|(k, _)| k == "PRESENCE_NAMESPACE") {
                env.push(("PRESENCE_NAMESPACE".into(), unique_namespace()));
            }
        }
        let mut d = Self {
            procs: Vec::new(),
            a: String::new(),
            b: String::new(),
            database_url: database_url.clone(),
            base: env.clone(),
        };
        match mode {
            Mode::Standalone => {
                d.spawn("standalone", env).await?;
                d.a = d.procs[0].2.url().to_owned();
                d.b = d.a.clone();
            }
            Mode::Cluster => {
                d.spawn("aggregator", env.clone()).await?;
                if database_url.is_some() {
                    d.spawn("persister", env.clone()).await?;
                }
                d.spawn("edge", with(&env, "PRESENCE_NODE_ID", "edge-a"))
                    .await?;
                d.spawn("edge", with(&env, "PRESENCE_NODE_ID", "edge-b"))
                    .await?;
                let edges: Vec<&Proc> = d
                    .procs
                    .iter()
                    .filter(|(role, _, _)| role == "edge")
                    .map(|(_, _, p)| p)
                    .collect();
                d.a = edges[0].url().to_owned();
                d.b = edges[1].url().to_owned();
            }
        }
        Ok(d)
    }

    async fn spawn(&mut self, role: &str, env: Vec<(String, String)>) -> anyhow::Result<()> {
        let borrowed: Vec<(&str, String)> =
            env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let proc = Proc::start(role, &borrowed).await?;
        self.procs.push((role.to_owned(), env, proc));
        Ok(())
    }

    /// The first process of `role`.
    pub fn proc(&mut self, role: &str) -> &mut Proc {
        self.procs
            .iter_mut()
            .find(|(r, _, _)| r == role)
            .map(|(_, _, p)| p)
            .unwrap_or_else(|| panic!("no {role} in this deployment"))
    }

    /// A cluster deployment with no process yet, on NATS at `env`'s `NATS_URL` (or the run's)
    /// in a fresh namespace: its processes are started with [`Deployment::add`].
    pub fn empty(env: &[(&str, String)], database_url: Option<String>) -> anyhow::Result<Self> {
        let mut base: Env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        if !base.iter().any(|(k, _)| k == "NATS_URL") {
            base.push(("NATS_URL".into(), nats_url()?));
        }
        if !base.iter().any(|(k, _)| k == "PRESENCE_NAMESPACE") {
            base.push(("PRESENCE_NAMESPACE".into(), unique_namespace()));
        }
        if let Some(url) = &database_url {
            base.push(("DATABASE_URL".into(), url.clone()));
        }
        Ok(Self {
            procs: Vec::new(),
            a: String::new(),
            b: String::new(),
            database_url,
            base,
        })
    }

    /// Starts another process of `role` with the deployment's environment plus `extra` (a
    /// second aggregator, a third edge); returns its index among the processes of `role`.
    pub async fn add(&mut self, role: &str, extra: &[(&str, String)]) -> anyhow::Result<usize> {
        let mut env = self.base.clone();
        env.retain(|(k, _)| k != "PRESENCE_NODE_ID");
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), v.clone()));
        }
        self.spawn(role, env).await?;
        Ok(self.procs.iter().filter(|(r, _, _)| r == role).count() - 1)
    }

    /// The `n`th process of `role` (0 is the first started).
    pub fn nth(&mut self, role: &str, n: usize) -> &mut Proc {
        self.procs
            .iter_mut()
            .filter(|(r, _, _)| r == role)
            .nth(n)
            .map(|(_, _, p)| p)
            .unwrap_or_else(|| panic!("no {role} number {n} in this deployment"))
    }

    /// Starts the `n`th process of `role` again (after a kill), with the same environment.
    pub async fn respawn(&mut self, role: &str, n: usize) -> anyhow::Result<()> {
        let i = self
            .procs
            .iter()
            .enumerate()
            .filter(|(_, (r, _, _))| r == role)
            .nth(n)
            .map(|(i, _)| i)
            .with_context(|| format!("no {role} number {n} in this deployment"))?;
        let borrowed: Vec<(&str, String)> = self.procs[i]
            .1
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        self.procs[i].2 = Proc::start(role, &borrowed).await?;
        Ok(())
    }

    /// How many processes of `role` the deployment has (running or killed).
    pub fn count(&self, role: &str) -> usize {
        self.procs.iter().filter(|(r, _, _)| r == role).count()
    }

    /// The stream namespace of a cluster deployment.
    pub fn namespace(&self) -> Option<String> {
        self.base
            .iter()
            .find(|(k, _)| k == "PRESENCE_NAMESPACE")
            .map(|(_, v)| v.clone())
    }

    /// The admin URL of the `n`th edge (0 is edge A).
    pub fn edge_admin(&self, n: usize) -> String {
        self.procs
            .iter()
            .filter(|(r, _, _)| r == "edge" || r == "standalone")
            .nth(n)
            .map(|(_, _, p)| p.admin.clone())
            .unwrap_or_else(|| panic!("no edge {n}"))
    }

    /// SIGKILLs the first process of `role` and starts another in its place.
    pub async fn kill_and_restart(&mut self, role: &str) -> anyhow::Result<()> {
        self.nth(role, 0).kill().await;
        self.respawn(role, 0).await
    }

    /// Cluster mode: SIGKILLs the aggregator and starts a new one in its place.
    pub async fn kill_and_restart_aggregator(&mut self) -> anyhow::Result<()> {
        self.kill_and_restart("aggregator").await
    }

    /// The (public URL, admin URL) of every edge.
    pub fn edges(&self) -> Vec<(String, String)> {
        self.procs
            .iter()
            .filter(|(r, _, _)| r == "edge")
            .map(|(_, _, p)| (p.url().to_owned(), p.admin.clone()))
            .collect()
    }

    /// SIGKILLs the edge whose public URL is `url`.
    pub async fn kill_edge(&mut self, url: &str) {
        for (role, _, p) in &mut self.procs {
            if role == "edge" && p.public.as_deref() == Some(url) {
                p.kill().await;
            }
        }
    }
}

fn with(env: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push((key.to_owned(), value.to_owned()));
    env
}
