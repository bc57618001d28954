//! The browser SDK (`sdk/`) and the dashboard in Debian's headless Chromium, driven by
//! `playwright-core` (`tests/node/browser.test.mjs`), against a real edge + aggregator over
//! JetStream: leader tabs, two browsers, the polling fallback, background beats, and the
//! dashboard (its screenshot lands in `target/test-artifacts/dashboard.png`).

use std::path::Path;

use presence_e2e::{Deployment, Mode, service_token, token};

/// Short enough that a session nobody beats for ends within the test.
const SESSION_TTL_MS: u64 = 3_000;

#[tokio::test]
async fn the_browser_sdk_and_the_dashboard_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let node = root.join("tests/node");
    let sdk = root.join("sdk/dist");
    assert!(
        node.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `make interop-deps` (npm ci in tests/node)"
    );
    assert!(
        sdk.join("active-users.js").exists(),
        "the SDK is not built: run `make sdk` (npm ci && npm run build in sdk/)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium not found at {chromium}: install Debian's `chromium` package (or set CHROMIUM)"
    );
    let d = Deployment::start(
        Mode::Cluster,
        &[
            ("PRESENCE_SESSION_TTL_MS", SESSION_TTL_MS.to_string()),
            ("PRESENCE_METRICS_TICK_MS", "250".into()),
            ("PRESENCE_RATE_LIMIT_IP_PER_MIN", "100000".into()),
            ("PRESENCE_RATE_LIMIT_CUSTOMER_PER_MIN", "100000".into()),
        ],
    )
    .await
    .unwrap();
    let output = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec"])
        .arg(node.join("browser.test.mjs"))
        .env("EDGE_URL", &d.a)
        .env("SDK_DIST", &sdk)
        .env("SESSION_TTL_MS", SESSION_TTL_MS.to_string())
        .env(
            "USERS",
            serde_json::json!([
                {"id": "zeynep", "token": token("zeynep", "female")},
                {"id": "ayse", "token": token("ayse", "female")},
                {"id": "mehmet", "token": token("mehmet", "male")},
            ])
            .to_string(),
        )
        .env("SERVICE_TOKEN", service_token())
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS", root.join("target/test-artifacts"))
        .output()
        .await
        .expect("running node");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    println!("{report}");
}
