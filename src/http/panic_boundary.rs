//! Around the router: a panic in a handler becomes a 500 problem, and the connection and the
//! server live on. It sits inside CORS, so that a browser can still read that answer, and
//! outside the router, since in axum a layer inside the router is one more boxed service
//! clone and one more boxed future on every request.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::error::ApiError;

#[derive(Clone, Copy, Debug, Default)]
pub struct PanicBoundaryLayer;

impl<S> Layer<S> for PanicBoundaryLayer {
    type Service = PanicBoundary<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PanicBoundary { inner }
    }
}

#[derive(Clone, Debug)]
pub struct PanicBoundary<S> {
    inner: S,
}

impl<S> Service<Request> for PanicBoundary<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = PanicBoundaryFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let state = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => State::Running { future },
            Err(panic) => State::Panicked {
                answer: Some(panic_response(panic)),
            },
        };
        PanicBoundaryFuture { state }
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<F> {
        Running {
            #[pin]
            future: F,
        },
        Panicked {
            answer: Option<Response>,
        },
    }
}

pin_project! {
    pub struct PanicBoundaryFuture<F> {
        #[pin]
        state: State<F>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for PanicBoundaryFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match this.state.as_mut().project() {
            StateProjection::Running { future } => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(polled) => polled,
                    Err(panic) => {
                        // A future that panicked is not polled again, only dropped.
                        this.state.set(State::Panicked { answer: None });
                        Poll::Ready(Ok(panic_response(panic)))
                    }
                }
            }
            StateProjection::Panicked { answer } => Poll::Ready(Ok(answer
                .take()
                .unwrap_or_else(|| ApiError::internal().into_response()))),
        }
    }
}

/// The 500 for a panic; its message goes to the log, never to the client.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "handler panicked");
    ApiError::internal().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_and_a_calm_one_passes() {
        let panicking = tower::service_fn(|_: Request| async {
            if true {
                panic!("on purpose");
            }
            Ok::<Response, Infallible>(StatusCode::OK.into_response())
        });
        let answer = PanicBoundary { inner: panicking }
            .oneshot(Request::new(axum::body::Body::empty()))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);

        let calm = tower::service_fn(|_: Request| async {
            Ok::<Response, Infallible>(StatusCode::NO_CONTENT.into_response())
        });
        let answer = PanicBoundary { inner: calm }
            .oneshot(Request::new(axum::body::Body::empty()))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    }
}
