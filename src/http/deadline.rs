//! The request deadline, with its timer set up only once a handler has to wait.
//!
//! `tokio::time::timeout` reads the clock, takes a handle to the runtime's timer and builds a
//! timer entry for every request before the handler has run at all. Most answers (health,
//! cached reads, refusals) are ready on their first poll, so here the timer exists only from
//! the first time the handler returns `Pending`, and the deadline reuses the request's own
//! start time.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use pin_project_lite::pin_project;
use tokio::task::Unconstrained;
use tokio::time::Sleep;

/// The handler did not answer before the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

pin_project! {
    /// `inner`, or [`Expired`] once `at` has passed.
    pub struct Deadline<F> {
        #[pin]
        inner: F,
        // Unconstrained: a handler that spends the task's whole cooperative budget must not
        // keep its own deadline from being noticed. Boxed: hyper moves this future around
        // with every request, and only the few that wait need a timer.
        timer: Option<Pin<Box<Unconstrained<Sleep>>>>,
        at: Instant,
    }
}

impl<F> Deadline<F> {
    pub fn new(inner: F, at: Instant) -> Self {
        Deadline {
            inner,
            timer: None,
            at,
        }
    }
}

impl<F: Future> Future for Deadline<F> {
    type Output = Result<F::Output, Expired>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.inner.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let at = tokio::time::Instant::from_std(*this.at);
        let timer = this.timer.get_or_insert_with(|| {
            Box::pin(tokio::task::unconstrained(tokio::time::sleep_until(at)))
        });
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(Expired))
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_answer_ready_at_once_sets_up_no_timer() {
        let mut deadline = pin!(Deadline::new(
            std::future::ready(7),
            Instant::now() + Duration::from_secs(30)
        ));
        let polled = std::future::poll_fn(|cx| Poll::Ready(deadline.as_mut().poll(cx))).await;
        assert_eq!(polled, Poll::Ready(Ok(7)));
        assert!(deadline.timer.is_none());
    }

    #[tokio::test]
    async fn a_waiting_handler_gets_its_answer_before_the_deadline() {
        let slow = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            "answered"
        };
        let answer = Deadline::new(slow, Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(answer, Ok("answered"));
    }

    #[tokio::test]
    async fn a_handler_past_the_deadline_is_expired_on_time() {
        let started = Instant::now();
        let never = std::future::pending::<()>();
        let answer = Deadline::new(never, started + Duration::from_millis(50)).await;
        assert_eq!(answer, Err(Expired));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(50),
            "expired early: {waited:?}"
        );
        assert!(waited < Duration::from_secs(2), "expired late: {waited:?}");
    }
}
