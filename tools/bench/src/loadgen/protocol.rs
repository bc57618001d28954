//! The messages between the coordinator and its workers, one JSON object a line: commands
//! on a worker's standard input ([`ToWorker`]), reports on its standard output
//! ([`FromWorker`]). Both sides read with [`parse`]: a line that is not a message is an error
//! naming the line, never a default.

use std::collections::HashMap;
use std::fmt::Display;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::common::{ConnRecord, PerKind};

/// The coordinator's commands, in the order it sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ToWorker {
    /// Open your connections on the ramp schedule.
    Start,
    /// Every worker has ramped: start churning.
    Hold,
    /// Close everything and report.
    Stop,
}

/// A worker's reports, in the order it sends them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum FromWorker {
    /// Started; waiting for [`ToWorker::Start`].
    Ready,
    /// Every second of the ramp: connections attempted and established so far, all kinds.
    Progress { attempted: u64, ok: u64 },
    /// Every connection of the ramp was attempted.
    Ramped(RampCounts),
    /// After [`ToWorker::Stop`]: everything the worker measured.
    Result(Box<WorkerResult>),
}

impl FromWorker {
    /// The message's `type`, for errors.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            FromWorker::Ready => "ready",
            FromWorker::Progress { .. } => "progress",
            FromWorker::Ramped(_) => "ramped",
            FromWorker::Result(_) => "result",
        }
    }
}

/// A worker's connections at the end of its ramp, by client kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RampCounts {
    pub(crate) attempted: PerKind<u64>,
    pub(crate) ok: PerKind<u64>,
    pub(crate) failed: PerKind<u64>,
    /// Open right now.
    pub(crate) open: PerKind<u64>,
}

/// What a worker measured over the run (counts by client kind).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WorkerResult {
    /// Every Socket.io connection attempt: the action log the analysis works from.
    pub(crate) conns: Vec<ConnRecord>,
    pub(crate) attempted: PerKind<u64>,
    pub(crate) ok: PerKind<u64>,
    pub(crate) failed: PerKind<u64>,
    /// Closed by the server, or broken.
    pub(crate) dropped: PerKind<u64>,
    /// Open when the stop came.
    pub(crate) held: PerKind<u64>,
    /// Failed attempts by `kind: reason`.
    pub(crate) failures: HashMap<String, u64>,
    /// Active-users WebSocket setups (connect to `hello`), µs.
    pub(crate) active_ws_setup_us: Vec<u64>,
    /// HTTP clients' joins, µs.
    pub(crate) http_join_us: Vec<u64>,
    pub(crate) http_beat_failures: u64,
    /// Users sent to churn, and churn picks that found nobody eligible.
    pub(crate) churns: u64,
    pub(crate) churn_skipped: u64,
    /// The worker's CPU seconds, if `/proc` told.
    pub(crate) cpu_s: Option<f64>,
    /// The worker's peak resident memory, KiB, if `/proc` told.
    pub(crate) rss_peak_kb: Option<u64>,
}

/// `message` as one line (without the newline).
pub(crate) fn line<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).expect("protocol messages serialize")
}

/// The message on `line`, from `sender` (for the error: "worker 3", "the coordinator").
pub(crate) fn parse<T: DeserializeOwned>(line: &str, sender: impl Display) -> anyhow::Result<T> {
    serde_json::from_str(line).with_context(|| {
        const SHOWN: usize = 200;
        let shown: String = line.chars().take(SHOWN).collect();
        let more = if line.chars().count() > SHOWN {
            "…"
        } else {
            ""
        };
        format!("{sender} sent a line that is not a message: {shown:?}{more}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::common::End;

    #[test]
    fn messages_round_trip_one_line_each() {
        let result = WorkerResult {
            conns: vec![ConnRecord {
                user: 7,
                start_us: 1,
                connected_us: 2,
                end_us: 3,
                end: End::Leave,
            }],
            held: [1, 0, 0],
            active_ws_setup_us: vec![5],
            cpu_s: Some(0.5),
            ..Default::default()
        };
        let text = line(&FromWorker::Result(Box::new(result)));
        assert!(!text.contains('\n'));
        assert!(text.starts_with(r#"{"type":"result","conns":[[7,1,2,3,1]]"#));
        let FromWorker::Result(back) = parse(&text, "worker 0").unwrap() else {
            panic!("not a result: {text}");
        };
        assert_eq!(back.conns[0].end, End::Leave);
        assert_eq!(back.held, [1, 0, 0]);
        assert_eq!(back.cpu_s, Some(0.5));

        assert_eq!(line(&ToWorker::Hold), r#"{"type":"hold"}"#);
        let progress: FromWorker =
            parse(r#"{"type":"progress","attempted":3,"ok":2}"#, "w").unwrap();
        assert!(matches!(
            progress,
            FromWorker::Progress {
                attempted: 3,
                ok: 2
            }
        ));
    }

    #[test]
    fn a_line_that_is_not_a_message_is_an_error_naming_it() {
        let e = parse::<FromWorker>("ramped {}", "worker 2").unwrap_err();
        assert!(
            format!("{e:#}").contains(r#"worker 2 sent a line that is not a message: "ramped {}""#)
        );
        assert!(parse::<ToWorker>(r#"{"type":"pause"}"#, "the coordinator").is_err());
        let mut result = WorkerResult::default();
        result.conns.push(ConnRecord {
            user: 7,
            start_us: 1,
            connected_us: 2,
            end_us: 3,
            end: End::Drop,
        });
        let text = line(&FromWorker::Result(Box::new(result)));
        assert!(parse::<FromWorker>(&text, "worker 0").is_ok());
        let no_such_end = text.replace("[7,1,2,3,3]", "[7,1,2,3,9]");
        assert_ne!(no_such_end, text);
        assert!(parse::<FromWorker>(&no_such_end, "worker 0").is_err());
    }
}
