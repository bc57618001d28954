//! A memory workaround at the edge of the HTTP stack: Socket.io requests keep their head for
//! as long as the connection lives, so the head is copied out of hyper's read buffer first.

/// Copies the request head of every Socket.io request out of the connection's read buffer.
///
/// hyper parses a request's URI and header values as slices of the connection's read buffer
/// (16 KiB), and the Socket.io layer keeps each connection's request head for as long as the
/// connection lives: without this copy, every open socket would pin that whole buffer. With
/// it the buffer is freed once the request is parsed (about 16 KB per connection saved).
pub(crate) async fn detach_request_head(mut req: axum::extract::Request) -> axum::extract::Request {
    if req.uri().path().starts_with(SOCKET_IO_PATH) {
        detach_head(&mut req);
    }
    req
}

/// Refuses a Socket.io polling POST whose body is over `max_bytes` with 413 and a JSON
/// body, counted, before the Socket.io layer reads any of it: a declared length is checked as
/// it is; a body without one (chunked) is read here up to the limit, and handed on with its
/// length once it is known to fit.
pub(crate) async fn refuse_oversized_polls(
    axum::extract::State(max_bytes): axum::extract::State<u64>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if req.method() != axum::http::Method::POST || !req.uri().path().starts_with(SOCKET_IO_PATH) {
        return next.run(req).await;
    }
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > max_bytes => too_large(format!(
            "the polling payload is {len} bytes; the limit is {max_bytes} (PRESENCE_MAX_PACKET_BYTES)"
        )),
        Some(_) => next.run(req).await,
        None => {
            let (mut head, body) = req.into_parts();
            let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
            match axum::body::to_bytes(body, limit).await {
                Ok(bytes) => {
                    head.headers
                        .insert(axum::http::header::CONTENT_LENGTH, bytes.len().into());
                    head.headers.remove(axum::http::header::TRANSFER_ENCODING);
                    let req =
                        axum::extract::Request::from_parts(head, axum::body::Body::from(bytes));
                    next.run(req).await
                }
                Err(e) if is_over_limit(&e) => too_large(format!(
                    "the polling payload is over the limit of {max_bytes} bytes (PRESENCE_MAX_PACKET_BYTES)"
                )),
                // The body broke off (the client stopped sending or sent a bad chunk).
                Err(e) => {
                    metrics::counter!("presence_http_rejected_total", "endpoint" => "socket.io", "reason" => "invalid_body")
                        .increment(1);
                    let body = axum::Json(serde_json::json!({
                        "error": "Bad Request",
                        "code": "invalid_body",
                        "message": format!("the polling payload could not be read: {e}"),
                    }));
                    (axum::http::StatusCode::BAD_REQUEST, body).into_response()
                }
            }
        }
    }
}

use axum::response::IntoResponse;

/// Whether reading a body failed on its length limit (rather than on the connection).
fn is_over_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn too_large(message: String) -> axum::response::Response {
    metrics::counter!("presence_http_rejected_total", "endpoint" => "socket.io", "reason" => "too_large")
        .increment(1);
    let body = axum::Json(serde_json::json!({
        "error": "Payload Too Large",
        "code": "too_large",
        "message": message,
    }));
    (axum::http::StatusCode::PAYLOAD_TOO_LARGE, body).into_response()
}

/// Where the Socket.io layer answers.
const SOCKET_IO_PATH: &str = "/socket.io/";

fn detach_head<B>(req: &mut axum::http::Request<B>) {
    use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
    if let Ok(uri) = Uri::from_maybe_shared(bytes::Bytes::copy_from_slice(
        req.uri().to_string().as_bytes(),
    )) {
        *req.uri_mut() = uri;
    }
    let headers = std::mem::take(req.headers_mut());
    let mut copied = HeaderMap::with_capacity(headers.len());
    let mut name = None;
    for (next, value) in headers {
        // The iterator names a header's first value only; the following ones repeat it.
        if let Some(next) = next {
            name = Some(HeaderName::from_bytes(next.as_str().as_bytes()).unwrap_or(next));
        }
        let Some(name) = name.clone() else { continue };
        let sensitive = value.is_sensitive();
        let mut owned = HeaderValue::from_bytes(value.as_bytes()).unwrap_or(value);
        owned.set_sensitive(sensitive);
        copied.append(name, owned);
    }
    *req.headers_mut() = copied;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, Request, Uri};
    use bytes::Bytes;

    fn within(buffer: &Bytes, part: &[u8]) -> bool {
        let start = buffer.as_ptr() as usize;
        let at = part.as_ptr() as usize;
        at >= start && at < start + buffer.len()
    }

    #[test]
    fn the_copied_head_no_longer_points_into_the_read_buffer() {
        let buffer = Bytes::from_static(
            b"/socket.io/?EIO=4&transport=websocket|websocket|tab-7|tab-8|secret-token",
        );
        let uri = Uri::from_maybe_shared(buffer.slice(0..37)).expect("uri");
        let upgrade = HeaderValue::from_maybe_shared(buffer.slice(38..47)).expect("value");
        let tab_a = HeaderValue::from_maybe_shared(buffer.slice(48..53)).expect("value");
        let tab_b = HeaderValue::from_maybe_shared(buffer.slice(54..59)).expect("value");
        let mut token = HeaderValue::from_maybe_shared(buffer.slice(60..)).expect("value");
        token.set_sensitive(true);
        let mut req = Request::builder()
            .uri(uri)
            .header("upgrade", upgrade)
            .header("x-tab", tab_a)
            .header("x-tab", tab_b)
            .header("authorization", token)
            .body(())
            .expect("request");
        assert!(within(&buffer, req.uri().path().as_bytes()));
        assert!(within(&buffer, req.headers()["upgrade"].as_bytes()));

        detach_head(&mut req);

        assert_eq!(
            req.uri().to_string(),
            "/socket.io/?EIO=4&transport=websocket"
        );
        assert!(!within(&buffer, req.uri().path().as_bytes()));
        assert!(!within(&buffer, req.uri().query().unwrap_or("").as_bytes()));
        assert_eq!(req.headers()["upgrade"], "websocket");
        let tabs: Vec<_> = req.headers().get_all("x-tab").iter().collect();
        assert_eq!(
            tabs,
            ["tab-7", "tab-8"],
            "repeated headers keep every value, in order"
        );
        assert!(req.headers()["authorization"].is_sensitive());
        for value in req.headers().values() {
            assert!(!within(&buffer, value.as_bytes()));
        }
    }
}
