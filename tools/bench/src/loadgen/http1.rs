//! A minimal HTTP/1.1 client on one keep-alive connection, for the active-users HTTP
//! clients: a browser beating over HTTP keeps its connection open between beats, and so
//! does this (reconnecting when the server closed it).

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub(crate) struct KeepAlive {
    /// `host:port`.
    addr: String,
    conn: Option<BufReader<TcpStream>>,
}

impl KeepAlive {
    /// A client of `base` (`http://host:port`); connects on the first request.
    pub(crate) fn new(base: &str) -> anyhow::Result<Self> {
        let addr = base
            .strip_prefix("http://")
            .context("an http:// URL is expected")?
            .trim_end_matches('/')
            .to_owned();
        Ok(Self { addr, conn: None })
    }

    /// `POST path` with a JSON `body`; the status code. A request on a reused connection
    /// that fails is retried once on a new one (the server may have closed it meanwhile).
    pub(crate) async fn post(&mut self, path: &str, body: &str) -> anyhow::Result<u16> {
        let reused = self.conn.is_some();
        match self.exchange(path, body).await {
            Ok(status) => Ok(status),
            Err(_) if reused => {
                self.conn = None;
                let answer = self.exchange(path, body).await;
                if answer.is_err() {
                    self.conn = None;
                }
                answer
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    async fn exchange(&mut self, path: &str, body: &str) -> anyhow::Result<u16> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.addr).await?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().context("no connection")?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        conn.get_mut().write_all(request.as_bytes()).await?;

        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            bail!("connection closed by the server");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let (mut length, mut chunked, mut close) = (0usize, false, false);
        loop {
            line.clear();
            if conn.read_line(&mut line).await? == 0 {
                bail!("connection closed in the headers");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = value.parse().context("bad content-length")?,
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .context("bad chunk size")?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    loop {
                        line.clear();
                        if conn.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                skip(conn, size + 2).await?;
            }
        } else {
            skip(conn, length).await?;
        }
        if close {
            self.conn = None;
        }
        Ok(status)
    }
}

async fn skip(conn: &mut BufReader<TcpStream>, mut n: usize) -> anyhow::Result<()> {
    let mut buf = [0u8; 512];
    while n > 0 {
        let take = n.min(buf.len());
        conn.read_exact(&mut buf[..take]).await?;
        n -= take;
    }
    Ok(())
}
