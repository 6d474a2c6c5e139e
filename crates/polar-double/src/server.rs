//! The HTTP/1 server. It runs its own accept loop, rather than `axum::serve`, so that a
//! fault can close a connection with no response bytes at all: the connection task
//! drops the socket when its request handler asks for it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

use crate::api::{self, ApiRequest, Reply, ReplyBody};
use crate::state::Shared;
use crate::{admin, FaultAction, RecordedRequest};

const MAX_BODY_BYTES: usize = 1 << 20;

/// Cut in place of a bodiless answer, so that the client still has a body to fail on.
const STAND_IN_BODY: &str = r#"{"detail":"a body that polar-double cuts short on purpose"}"#;

/// Lets a handler close its own connection without answering.
#[derive(Clone)]
struct Connection(Arc<Notify>);

impl Connection {
    async fn close_without_response(&self) -> Response {
        self.0.notify_one();
        // The connection task drops this future together with the socket.
        std::future::pending().await
    }
}

/// What the client gets once the request has been applied.
enum Answer {
    Real,
    NoResponse,
    Instead(Response),
    CutBody(StatusCode),
}

impl Answer {
    /// The status to record; `None` when nothing is answered.
    fn status(&self, real: StatusCode) -> Option<u16> {
        match self {
            Answer::Real => Some(real.as_u16()),
            Answer::NoResponse => None,
            Answer::Instead(response) => Some(response.status().as_u16()),
            Answer::CutBody(status) => Some(status.as_u16()),
        }
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    admin::routes().fallback(polar_api).with_state(shared)
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Typically out of file descriptors: let some connections finish.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        tokio::spawn(serve_connection(stream, router.clone(), shutdown.clone()));
    }
}

async fn serve_connection(stream: TcpStream, router: Router, mut shutdown: watch::Receiver<()>) {
    let close = Arc::new(Notify::new());
    let connection = Connection(close.clone());
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(connection.clone());
        router.clone().oneshot(request)
    });
    let http =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = http => {}
        _ = close.notified() => {}
        _ = shutdown.changed() => {}
    }
}

async fn polar_api(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if parts.uri.path().starts_with("/__double") {
        return into_response(Reply::route_not_found());
    }
    let body = to_bytes(body, MAX_BODY_BYTES).await.unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let index = shared.record(RecordedRequest {
        method: parts.method.to_string(),
        path,
        authorization: header("authorization"),
        polar_version: header("polar-version"),
        body: String::from_utf8_lossy(&body).into_owned(),
        status: None,
        received_at_us: shared.elapsed_us(),
        answered_at_us: None,
    });
    let Some(connection) = parts.extensions.get::<Connection>().cloned() else {
        return into_response(Reply::fault(
            500,
            Some("connection control missing".into()),
            None,
        ));
    };

    let fault = shared.take_fault(
        parts.method.as_str(),
        api::discount_id_in_path(parts.uri.path()),
    );
    let mut delay = None;
    let mut answer = Answer::Real;
    match fault {
        Some(FaultAction::Status {
            status,
            body,
            retry_after_secs,
        }) => {
            let reply = Reply::fault(status, body, retry_after_secs);
            shared.answered(index, Some(reply.status.as_u16()));
            return into_response(reply);
        }
        Some(FaultAction::DropConnection) => return connection.close_without_response().await,
        Some(FaultAction::Delay { millis }) => {
            delay = Some(std::time::Duration::from_millis(millis));
        }
        Some(FaultAction::ApplyThenDropConnection) => answer = Answer::NoResponse,
        Some(FaultAction::ApplyThenAnswer {
            status,
            body,
            content_type,
        }) => answer = Answer::Instead(given_response(status, body, content_type)),
        Some(FaultAction::ApplyThenCutBody { status }) => {
            answer = Answer::CutBody(status_code(status));
        }
        None => {}
    }

    let api_request = ApiRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    };
    // A separate task, so that a client hanging up (say, on its timeout during a delay)
    // does not stop the request from being applied, as on a real server.
    let handling = tokio::spawn({
        let shared = shared.clone();
        async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let reply = api::handle(&shared, &api_request);
            shared.answered(index, answer.status(reply.status));
            (reply, answer)
        }
    });
    let (reply, answer) = match handling.await {
        Ok(handled) => handled,
        Err(_) => (
            Reply::fault(
                500,
                Some(r#"{"detail":"polar-double panicked"}"#.into()),
                None,
            ),
            Answer::Real,
        ),
    };
    match answer {
        Answer::Real => into_response(reply),
        Answer::NoResponse => connection.close_without_response().await,
        Answer::Instead(response) => response,
        Answer::CutBody(status) => cut_body(into_response(reply), status).await,
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The body verbatim (not re-serialized as JSON like a `Status` fault's).
fn given_response(status: u16, body: Option<String>, content_type: Option<String>) -> Response {
    let content_type = content_type.or_else(|| body.is_some().then(|| "application/json".into()));
    let mut response = Response::new(body.map_or_else(Body::empty, Body::from));
    *response.status_mut() = status_code(status);
    if let Some(value) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

async fn cut_body(real: Response, status: StatusCode) -> Response {
    let (mut parts, body) = real.into_parts();
    let mut full = to_bytes(body, usize::MAX).await.unwrap_or_default();
    if full.is_empty() {
        full = Bytes::from_static(STAND_IN_BODY.as_bytes());
        parts
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    parts.status = status;
    parts.headers.insert(CONTENT_LENGTH, full.len().into());
    let first_half = full.slice(..full.len() / 2);
    Response::from_parts(parts, Body::new(ShortBody::new(first_half)))
}

/// Ends before the declared `Content-Length`, which makes hyper close the connection.
/// It yields once after its bytes, because hyper closes without flushing what it has
/// buffered when a body ends short.
struct ShortBody {
    bytes: Option<Bytes>,
    yielded: bool,
}

impl ShortBody {
    fn new(bytes: Bytes) -> ShortBody {
        ShortBody {
            bytes: Some(bytes),
            yielded: false,
        }
    }
}

impl hyper::body::Body for ShortBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(bytes) = self.bytes.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(None)
    }
}

pub(crate) fn into_response(reply: Reply) -> Response {
    let mut response = match reply.body {
        ReplyBody::Empty => Body::empty().into_response(),
        ReplyBody::Json(json) => axum::Json(json).into_response(),
        ReplyBody::Text(text) => text.into_response(),
    };
    *response.status_mut() = reply.status;
    for (name, value) in reply.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    if matches!(response.status().as_u16(), 204 | 304) {
        response.headers_mut().remove(CONTENT_TYPE);
    }
    response
}
