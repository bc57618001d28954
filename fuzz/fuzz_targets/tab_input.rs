//! The active-users widget's input: the bodies of `POST /presence/{join,beat,leave}` and the
//! frames of `/ws/active-users`. Arbitrary bytes are refused with a code (and the field, if
//! one) or give a tab whose events encode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_events::tab_input::{ClientMessage, parse_client_message, parse_tab_request};
use presence_events::{Event, EventBody, Millis, NodeId, Transport};

fn encodes(body: EventBody) {
    let node = NodeId::parse("fuzz").expect("a node id");
    let event = Event::new(node, Millis(0), body);
    event.encode().expect("an event of accepted input encodes");
}

fuzz_target!(|data: &[u8]| {
    match parse_tab_request(data) {
        Ok(request) => encodes(request.join(Transport::Http, None)),
        Err(e) => assert!(!e.code.is_empty() && !e.message.is_empty()),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        match parse_client_message(text) {
            Ok(ClientMessage::Auth(request)) => {
                encodes(request.join(Transport::Websocket, Some("9f3a0c1b2d4e5f60".into())))
            }
            Ok(ClientMessage::Ping) => {}
            Err(e) => assert!(!e.code.is_empty() && !e.message.is_empty()),
        }
    }
});
