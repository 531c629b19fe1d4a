//! The HTTP layer: the router (resource routers merged), its layers, and the fallbacks.

pub mod auth;
pub mod auth_user;
pub mod client;
pub mod conditional;
pub mod deadline;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod items;
pub mod jobs;
pub mod limited;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod panic_boundary;
pub mod route_label;
pub mod state;
pub mod users;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use tower::util::{Either, MapFuture};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::http::state::AppState;
use middleware::{RequestContext, RequestContextLayer};
use panic_boundary::{PanicBoundary, PanicBoundaryLayer};
use route_label::RouteLabels;

/// Where the API description and its browsable documentation are served.
const OPENAPI_PATH: &str = "/openapi.json";
const DOCS_PATH: &str = "/docs";

/// Every documented route, with the OpenAPI document made from their annotations.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(ops::router())
        .merge(users::router())
        .merge(auth::router())
        .merge(items::router())
        .merge(jobs::router())
        .merge(limited::router())
        .split_for_parts();
    utoipa::Modify::modify(&openapi::ServerFaults, &mut openapi);
    (router, openapi)
}

/// The whole service, as the accept loop serves it (named, not boxed: a boxed service is
/// cloned into a new allocation for every request).
pub type HttpService = RequestContext<Either<BoxedCors, Routes>>;

/// The router, a panic in it answered 500.
pub type Routes = PanicBoundary<Router>;

/// The routes behind CORS, its future boxed: hyper moves the request's future with every
/// request, and unboxed the CORS state would make it larger for every deployment, CORS or not.
pub type BoxedCors = MapFuture<Cors<Routes>, fn(CorsFuture) -> BoxedAnswer>;
type CorsFuture = <Cors<Routes> as Service<Request>>::Future;
type BoxedAnswer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The whole service: request context → CORS (when configured) → panic boundary → router.
/// The request-context middleware wraps the router from outside, so it also sees what the
/// router adds last (such as the `Allow` header of a 405); it labels the metrics with the
/// route template it matches itself (`route_label`). Nothing is layered inside the router.
/// Routes an embedding program (the tests) adds beside larder's own, with their templates
/// for the metrics' route labels.
#[derive(Default)]
pub struct ExtraRoutes {
    pub router: Router<AppState>,
    pub templates: Vec<String>,
}

pub fn service(state: AppState, extra: ExtraRoutes) -> HttpService {
    let (api, openapi) = api();
    let mut templates: Vec<String> = openapi.paths.paths.keys().cloned().collect();
    templates.extend([
        OPENAPI_PATH.to_owned(),
        DOCS_PATH.to_owned(),
        format!("{DOCS_PATH}/"),
        format!("{DOCS_PATH}/{{*rest}}"),
    ]);
    let docs = Router::from(SwaggerUi::new(DOCS_PATH).url(OPENAPI_PATH, openapi))
        .layer(axum::middleware::map_response(docs_security_headers));
    let routes = api.merge(docs).merge(extra.router);
    templates.extend(extra.templates);
    let labels = Arc::new(RouteLabels::new(templates.iter().map(String::as_str)));
    let context = RequestContextLayer {
        timeout: state.settings.request_timeout(),
        labels,
    };
    let cors = state.settings.cors_origins.as_deref().map(|origins| {
        let boxed: fn(CorsFuture) -> BoxedAnswer = |future| Box::pin(future);
        ServiceBuilder::new()
            .map_future(boxed)
            .layer(cors_layer(origins))
    });
    let inner = PanicBoundaryLayer.layer(routes.fallback(middleware::not_found).with_state(state));
    ServiceBuilder::new()
        .layer(context)
        .option_layer(cors)
        .service(inner)
}

/// The docs page runs larder's own scripts only and may not be framed (clickjacking).
/// Swagger UI sets inline styles and uses `data:` images, so those two are allowed.
const DOCS_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'; object-src 'none'";

async fn docs_security_headers(mut response: Response) -> Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// CORS is off unless `LARDER_CORS_ORIGINS` names origins (or `*`).
fn cors_layer(origins: &str) -> CorsLayer {
    use axum::http::{HeaderValue, Method, header};
    let allow_origin = if origins.trim() == "*" {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .split(',')
                .map(str::trim)
                .filter(|origin| !origin.is_empty())
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            idempotency::HEADER,
            limited::CLIENT,
            middleware::REQUEST_ID,
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            middleware::REQUEST_ID,
            crate::limits::RATELIMIT,
            crate::limits::RATELIMIT_POLICY,
        ])
        .max_age(std::time::Duration::from_secs(600))
}
