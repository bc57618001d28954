//! A stock `socket.io-client` from npm works unchanged against the edges, over the websocket
//! and the polling transport, in cluster and standalone mode. The client script is
//! `tests/node/interop.mjs`; `make test` installs its dependency (`npm ci`).

use std::path::Path;

use presence_e2e::{Deployment, Mode, token};

async fn stock_client_works(mode: Mode, transport: &str) {
    let d = Deployment::start(mode, &[]).await.unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    assert!(
        dir.join("node_modules/socket.io-client").exists(),
        "socket.io-client is not installed: run `make interop-deps` (npm ci in tests/node)"
    );
    let output = tokio::process::Command::new("node")
        .arg(dir.join("interop.mjs"))
        .args([&d.a, &d.b, transport])
        .arg(token("fatma", "female"))
        .arg(token("ali", "male"))
        .arg("ali")
        .output()
        .await
        .expect("running node");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn stock_client_over_websocket_in_a_cluster() {
    stock_client_works(Mode::Cluster, "websocket").await;
}

#[tokio::test]
async fn stock_client_over_polling_in_a_cluster() {
    stock_client_works(Mode::Cluster, "polling").await;
}

#[tokio::test]
async fn stock_client_over_websocket_standalone() {
    stock_client_works(Mode::Standalone, "websocket").await;
}

#[tokio::test]
async fn stock_client_over_polling_standalone() {
    stock_client_works(Mode::Standalone, "polling").await;
}
