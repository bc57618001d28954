//! The retry and de-duplication path of appends: a publish whose acknowledgement was lost
//! (stored, but the writer never heard) and one the log refused are sent again with the same
//! message id, and every message ends up in the log exactly once, in order.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;

use super::*;

/// What the flaky log does to the nth publish (counted from 0).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// Stores it, then reports a failure (the acknowledgement was lost on the way back).
    LoseAck,
    /// Refuses it without storing (no stream leader, no responders).
    Refuse,
}

/// A [`MemoryLog`] that fails chosen publishes.
struct Flaky {
    log: MemoryLog,
    calls: AtomicUsize,
    faults: Mutex<Vec<(usize, Fault)>>,
}

impl Flaky {
    fn new(faults: &[(usize, Fault)]) -> Self {
        Self {
            log: MemoryLog::new(),
            calls: AtomicUsize::new(0),
            faults: Mutex::new(faults.to_vec()),
        }
    }

    fn fault(&self, call: usize) -> Option<Fault> {
        let faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults.iter().find(|(n, _)| *n == call).map(|(_, f)| *f)
    }
}

impl EventLog for Flaky {
    fn ensure_stream(&self, spec: StreamSpec) -> BoxFuture<'_, Result<(), LogError>> {
        self.log.ensure_stream(spec)
    }

    fn publish(&self, msg: Outgoing) -> BoxFuture<'_, Result<AckFuture, LogError>> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let failure = move |subject: &str| LogError::Publish {
                subject: subject.to_owned(),
                reason: format!("injected fault on publish {call}"),
            };
            match self.fault(call) {
                Some(Fault::Refuse) => Err(failure(&msg.subject)),
                Some(Fault::LoseAck) => {
                    let subject = msg.subject.clone();
                    let stored = self.log.publish(msg).await?;
                    stored.await?;
                    let lost: AckFuture = Box::pin(async move { Err(failure(&subject)) });
                    Ok(lost)
                }
                None => self.log.publish(msg).await,
            }
        })
    }

    fn subscribe<'a>(
        &'a self,
        stream: &'a str,
        filter: Option<&'a str>,
        start: StartAt,
    ) -> BoxFuture<'a, Result<Deliveries, LogError>> {
        self.log.subscribe(stream, filter, start)
    }

    fn subscribe_shared<'a>(
        &'a self,
        stream: &'a str,
        durable: &'a str,
        start_if_new: StartAt,
    ) -> BoxFuture<'a, Result<Deliveries, LogError>> {
        self.log.subscribe_shared(stream, durable, start_if_new)
    }

    fn board(&self, spec: BoardSpec) -> BoxFuture<'_, Result<Arc<dyn Board>, LogError>> {
        self.log.board(spec)
    }

    fn last_sequence<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<u64, LogError>> {
        self.log.last_sequence(stream)
    }

    fn first_sequence<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<u64, LogError>> {
        self.log.first_sequence(stream)
    }
}

async fn flaky(faults: &[(usize, Fault)]) -> Flaky {
    let log = Flaky::new(faults);
    log.ensure_stream(StreamSpec {
        name: "E".into(),
        subjects: vec!["e.>".into()],
        max_msgs_per_subject: 0,
        max_age: Duration::ZERO,
        max_bytes: 0,
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
        allow_message_ttl: false,
    })
    .await
    .unwrap();
    log
}

fn message(i: usize) -> Outgoing {
    Outgoing {
        subject: format!("e.{}", i % 7),
        msg_id: format!("m{i}"),
        payload: Bytes::from(i.to_string()),
        ttl: None,
    }
}

/// Every payload in the stream, in order.
async fn stored(log: &Flaky) -> Vec<String> {
    let last = log.last_sequence("E").await.unwrap();
    let mut sub = log
        .subscribe("E", None, StartAt::Sequence(1))
        .await
        .unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < last {
        let d = sub.next().await.unwrap().unwrap();
        out.push(String::from_utf8(d.payload.to_vec()).unwrap());
    }
    out
}

#[tokio::test]
async fn a_lost_acknowledgement_is_retried_and_stored_once() {
    let log = flaky(&[(0, Fault::LoseAck), (1, Fault::LoseAck)]).await;
    let seq = publish_retrying(&log, message(0), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(seq, 1, "the third attempt finds the first copy");
    assert_eq!(log.calls.load(Ordering::SeqCst), 3);
    assert_eq!(stored(&log).await, ["0"]);
}

#[tokio::test]
async fn a_refused_publish_is_retried_until_the_log_takes_it() {
    let log = flaky(&[(0, Fault::Refuse), (1, Fault::Refuse), (2, Fault::LoseAck)]).await;
    publish_retrying(&log, message(0), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(stored(&log).await, ["0"]);
}

#[tokio::test]
async fn retrying_gives_up_with_the_error_after_its_bound() {
    let faults: Vec<(usize, Fault)> = (0..1000).map(|n| (n, Fault::Refuse)).collect();
    let log = flaky(&faults).await;
    let started = tokio::time::Instant::now();
    let e = publish_retrying(&log, message(0), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("injected fault"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(log.calls.load(Ordering::SeqCst) >= 2, "it was retried");
    assert!(stored(&log).await.is_empty());
}

#[tokio::test]
async fn a_pipelined_batch_with_lost_and_refused_appends_lands_once_and_in_order() {
    // A lost ack in the first window, one in the second, a refusal in the third: the
    // windows are re-sent from the first message not known durable, and the copies already
    // stored are dropped by their ids.
    let n = PUBLISH_WINDOW * 2 + 500;
    let faults = [
        (3, Fault::LoseAck),
        (PUBLISH_WINDOW + 1_500, Fault::LoseAck),
        (PUBLISH_WINDOW * 3, Fault::Refuse),
    ];
    let log = flaky(&faults).await;
    let messages: Vec<Outgoing> = (0..n).map(message).collect();
    let shutdown = tokio_util::sync::CancellationToken::new();
    assert!(publish_all_durable(&log, &messages, &shutdown).await);
    let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(stored(&log).await, expected);
    assert!(
        log.calls.load(Ordering::SeqCst) > n,
        "some appends were sent twice"
    );
}
