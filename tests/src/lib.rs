//! Harness of the end-to-end tests: starts real `presence` processes (standalone, or an
//! aggregator and edges against the NATS JetStream at `NATS_URL`), each test in its own
//! namespace so tests run in parallel on one NATS server, and connects real clients.
//!
//! `make test` starts a throwaway `nats-server -js` and sets `NATS_URL`; the binary is
//! `target/<profile>/presence` next to the test executable, or `PRESENCE_BIN`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use presence_sio_client::{SioClient, SioError};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The JWT secret every test process uses.
pub const SECRET: &str = "e2e-secret";

/// Short timings so sweeps happen within a test.
pub const HEARTBEAT_TIMEOUT_MS: u64 = 1_500;
/// Sweep interval used by the tests.
pub const SWEEP_INTERVAL_MS: u64 = 250;

/// The `presence` binary under test.
pub fn presence_bin() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("PRESENCE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test executable has no target directory")?;
    let bin = profile_dir.join("presence");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build -p presence) or set PRESENCE_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// The NATS server of the test run.
pub fn nats_url() -> anyhow::Result<String> {
    std::env::var("NATS_URL")
        .context("NATS_URL is not set: run the tests with `make test`, which starts nats-server")
}

/// A fresh namespace: streams and subjects no other test sees.
pub fn unique_namespace() -> String {
    // The tail of a UUID v7 is random.
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("t{}", &id[id.len() - 20..])
}

/// A running `presence` process, killed when dropped.
pub struct Proc {
    child: Child,
    /// `http://addr` of its public listener, if it has one.
    pub public: Option<String>,
    /// `http://addr` of its admin listener.
    pub admin: String,
}

impl Proc {
    /// The process id, while it runs (for reading `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Starts `presence <role>` with `env` and waits for its ready banner.
    pub async fn start(role: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(presence_bin()?);
        // Only what the test asks for: the run's own server URLs are not for every process.
        cmd.arg(role)
            .env_remove("DATABASE_URL")
            .env_remove("NATS_URL")
            .env("PRESENCE_HTTP_ADDR", "127.0.0.1:0")
            .env("PRESENCE_ADMIN_ADDR", "127.0.0.1:0")
            .env("JWT_SECRET", SECRET)
            .env(
                "PRESENCE_HEARTBEAT_TIMEOUT_MS",
                HEARTBEAT_TIMEOUT_MS.to_string(),
            )
            .env("PRESENCE_SWEEP_INTERVAL_MS", SWEEP_INTERVAL_MS.to_string())
            .env("PRESENCE_BEAT_FLUSH_MS", "100")
            .env("PRESENCE_EVENTS_MAX_BYTES", (64 * 1024 * 1024).to_string())
            .env(
                "RUST_LOG",
                std::env::var("E2E_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting presence {role}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let banner = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("presence ") && line.contains(" ready: ") {
                    return Ok(line);
                }
            }
            bail!("presence {role} exited before it was ready")
        })
        .await
        .with_context(|| format!("presence {role} not ready within 20 s"))??;
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let field = |name: &str| {
            banner
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .map(|addr| format!("http://{addr}"))
        };
        Ok(Self {
            public: field("public"),
            admin: field("admin").context("banner without admin address")?,
            child,
        })
    }

    /// The public base URL (panics for roles without one: a test bug).
    pub fn url(&self) -> &str {
        self.public
            .as_deref()
            .expect("this role has no public listener")
    }

    /// SIGKILL: the process vanishes without a goodbye.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM without waiting for the exit.
    pub fn signal_term(&self) -> anyhow::Result<()> {
        let pid = self.child.id().context("already exited")?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        Ok(())
    }

    /// SIGTERM, then waits for the exit.
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().context("already exited")?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        Ok(tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??)
    }
}

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
        let mut d = Self {
            procs: Vec::new(),
            a: String::new(),
            b: String::new(),
            database_url: database_url.clone(),
        };
        match mode {
            Mode::Standalone => {
                d.spawn("standalone", env).await?;
                d.a = d.procs[0].2.url().to_owned();
                d.b = d.a.clone();
            }
            Mode::Cluster => {
                env.push(("NATS_URL".into(), nats_url()?));
                if !env.iter().any(|(k, _)| k == "PRESENCE_NAMESPACE") {
                    env.push(("PRESENCE_NAMESPACE".into(), unique_namespace()));
                }
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

    /// The stream namespace of a cluster deployment.
    pub fn namespace(&self) -> Option<String> {
        self.procs.first().and_then(|(_, env, _)| {
            env.iter()
                .find(|(k, _)| k == "PRESENCE_NAMESPACE")
                .map(|(_, v)| v.clone())
        })
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
        let i = self
            .procs
            .iter()
            .position(|(r, _, _)| r == role)
            .with_context(|| format!("no {role} in this deployment"))?;
        self.procs[i].2.kill().await;
        let borrowed: Vec<(&str, String)> = self.procs[i]
            .1
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        self.procs[i].2 = Proc::start(role, &borrowed).await?;
        Ok(())
    }

    /// Cluster mode: SIGKILLs the aggregator and starts a new one in its place.
    pub async fn kill_and_restart_aggregator(&mut self) -> anyhow::Result<()> {
        self.kill_and_restart("aggregator").await
    }
}

fn with(env: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push((key.to_owned(), value.to_owned()));
    env
}

/// A new, empty database on the test run's PostgreSQL (`DATABASE_URL`); returns its URL.
pub async fn fresh_database() -> anyhow::Result<String> {
    use sqlx::Connection;
    let admin = std::env::var("DATABASE_URL").context(
        "DATABASE_URL is not set: run the tests with `make test`, which starts PostgreSQL",
    )?;
    let name = unique_namespace();
    let mut conn = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(base, _)| base);
    Ok(format!("{base}/{name}"))
}

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

/// An HTTP response, as read by [`http`].
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`): enough for tests, with
/// nothing between the test and the server's bytes.
pub async fn http(
    method: &str,
    url: &str,
    extra_headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<HttpResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .context("http:// URL expected")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in extra_headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    if let Some(body) = body {
        stream.write_all(body).await?;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
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

/// `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A PostgreSQL server of a test's own, on its own port, that the test may stop and start
/// (stopped and removed when dropped).
pub struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// `initdb` a fresh cluster and start it; creates the database `presence`.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context("PostgreSQL server binaries not found under /usr/lib/postgresql")?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .context("no initdb found")?;
        let dir = std::env::temp_dir().join(format!("pg-{}", unique_namespace()));
        std::fs::create_dir_all(&dir)?;
        let as_postgres = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if as_postgres {
            std::process::Command::new("chown")
                .arg("postgres")
                .arg(&dir)
                .status()?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let pg = Self {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        )?;
        pg.resume()?;
        use sqlx::Connection;
        let mut conn =
            sqlx::PgConnection::connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
                .await?;
        sqlx::query("CREATE DATABASE presence")
            .execute(&mut conn)
            .await?;
        Ok(pg)
    }

    /// The URL of its `presence` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/presence", self.port)
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop(&self) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.dir.join("data").to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
    }

    /// Starts it again on the same port.
    pub fn resume(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.dir.join("data").to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        )
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            std::process::Command::new(&program)
        };
        let out = cmd.args(args).output()?;
        if !out.status.success() {
            bail!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.dir.join("data").to_string_lossy(),
                "-m",
                "immediate",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real HAProxy (Debian's) in front of edges: sticky by client address (Socket.io polling),
/// WebSocket upgrades passed through, an edge out of rotation when its `/readyz` fails.
pub struct Balancer {
    child: Child,
    dir: PathBuf,
    /// `http://addr` of the balancer.
    pub url: String,
}

impl Balancer {
    /// Starts HAProxy in front of `edges`: (public URL, admin URL) pairs.
    pub async fn start(edges: &[(String, String)]) -> anyhow::Result<Self> {
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
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n    timeout tunnel 1h\n    option forwardfor\n    default-server check inter 200ms fall 1 rise 1\n\nfrontend public\n    bind 127.0.0.1:{port}\n    default_backend edges\n\nbackend edges\n    balance source\n    option httpchk GET /readyz\n{servers}"
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

impl Deployment {
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

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`
/// (clock ticks of 1/100 s, as on every Linux this runs on).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces: fields are counted from its closing parenthesis.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .context("short /proc/<pid>/stat")?
            .parse::<f64>()
            .context("a number in /proc/<pid>/stat")
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Ok((field(11)? + field(12)?) / 100.0)
}

/// Resident memory of a process in bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok(kb * 1024)
}

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
