//! The HTTP layer: the router (resource routers merged), its layers, and the fallbacks.

pub mod auth;
pub mod conditional;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod items;
pub mod jobs;
pub mod limited;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod test_hooks;
pub mod users;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::state::AppState;
use middleware::RequestTimeout;

/// Every documented route, with the OpenAPI document made from their annotations.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(ops::router())
        .merge(users::router())
        .merge(auth::router())
        .merge(items::router())
        .merge(jobs::router())
        .merge(limited::router())
        .split_for_parts()
}

/// The whole service. The request-context middleware wraps the router from outside, so it
/// also sees what the router adds last (such as the `Allow` header of a 405); an inner layer
/// reports the matched route template for the metrics.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = api();
    let mut routes = api.merge(SwaggerUi::new("/docs").url("/openapi.json", openapi));
    if state.settings.test_hooks {
        routes = routes.merge(test_hooks::router());
    }
    let timeout = RequestTimeout(state.settings.request_timeout());
    let max_body = usize::try_from(state.settings.max_body).unwrap_or(usize::MAX);
    let inner = routes
        .fallback(middleware::not_found)
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(middleware::record_route))
                .layer(CatchPanicLayer::custom(middleware::panic_response))
                .layer(DefaultBodyLimit::max(max_body)),
        )
        .with_state(state);
    Router::new().fallback_service(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(
                timeout,
                middleware::request_context,
            ))
            .service(inner),
    )
}
