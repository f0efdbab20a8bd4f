//! Request bodies read by hand, for handlers that parse a document
//! themselves (to name the bad field in a `422`) rather than through
//! `web::Json`.

use std::{
    cell::Cell,
    future::Future,
    io,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::Duration,
};

use actix_web::{
    HttpMessage, HttpRequest, ResponseError,
    body::{EitherBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    error::PayloadError,
    http::header,
    middleware::Next,
    web,
};
use bytes::Bytes;
use futures_util::Stream;

use crate::error::ApiError;

/// The body, once it is known to be JSON: `415` without
/// `Content-Type: application/json`, `400 bad_json` when it does not parse,
/// as for every other JSON body.
pub fn json_body<'a>(req: &HttpRequest, body: &'a [u8]) -> Result<&'a [u8], ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::unsupported_media_type("expected Content-Type: application/json"));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        return Err(ApiError::bad_request("bad_json", format!("malformed JSON: {e}")));
    }
    Ok(body)
}

/// How long a request's body may take to arrive (`server.body_read_timeout`),
/// as app data for [`read_deadline`].
#[derive(Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

/// Middleware: a body that has not fully arrived within [`BodyReadTimeout`]
/// of the handler's first read ends with an error, and the request is
/// answered `408 request_timeout` whatever the handler made of that error.
/// actix bounds only the request head (`server.request_head_timeout`);
/// without this, a client sending a byte a second holds its connection (a
/// file) for as long as it likes.
///
/// A request without a body (every stream open) passes untouched; one with
/// a body pays one boxed stream and, once it is read, one timer.
pub async fn read_deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0");
    let timeout = req.app_data::<web::Data<BodyReadTimeout>>().map(|t| t.0);
    let (true, Some(timeout)) = (has_body, timeout) else {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let timed_out = Rc::new(Cell::new(false));
    let bounded = Deadline { payload: req.take_payload(), timeout, sleep: None, timed_out: timed_out.clone() };
    req.set_payload(Payload::from(Box::pin(bounded) as Pin<Box<dyn Stream<Item = _>>>));
    let response = next.call(req).await?;
    if !timed_out.get() {
        return Ok(response.map_into_left_body());
    }
    let (req, _) = response.into_parts();
    let error = ApiError::request_timeout(format!("the request body did not arrive within {} ms", timeout.as_millis()));
    Ok(ServiceResponse::new(req, error.error_response()).map_into_right_body())
}

/// A request body that fails once it has taken longer than `timeout`
/// since it was first polled.
struct Deadline {
    payload: Payload,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Read by [`read_deadline`] after the handler: the request ran out of
    /// time, whatever the handler answered.
    timed_out: Rc<Cell<bool>>,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.timed_out.get() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut this.payload).poll_next(cx) {
            return Poll::Ready(item);
        }
        let timeout = this.timeout;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.timed_out.set(true);
                Poll::Ready(Some(Err(PayloadError::Io(io::Error::new(io::ErrorKind::TimedOut, "body read timeout")))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
