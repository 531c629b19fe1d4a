//! The HTTP layer: the router (resource routers merged), its layers, and the fallbacks.

pub mod answers;
pub mod auth;
pub mod auth_user;
pub mod client;
pub mod conditional;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod items;
pub mod jobs;
pub mod layers;
pub mod limited;
pub mod negotiation;
pub mod openapi;
pub mod ops;
pub mod password_reset;
pub mod prefer;
pub mod route_label;
pub mod sessions;
pub mod state;
pub mod users;

use axum::Router;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::http::state::AppState;
pub use layers::HttpService;
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
        .merge(sessions::router())
        .merge(password_reset::router())
        .merge(items::router())
        .merge(jobs::router())
        .merge(limited::router())
        .split_for_parts();
    utoipa::Modify::modify(&openapi::ServerFaults, &mut openapi);
    utoipa::Modify::modify(&openapi::PublicOperations, &mut openapi);
    (router, openapi)
}

/// Routes an embedding program (the tests) adds beside larder's own, with their templates
/// for the metrics' route labels.
#[derive(Default)]
pub struct ExtraRoutes {
    pub router: Router<AppState>,
    pub templates: Vec<String>,
}

/// The whole service: larder's routes, the docs and `extra`, inside the layers of
/// `http::layers`.
pub fn service(state: AppState, extra: ExtraRoutes) -> HttpService {
    let (api, openapi) = api();
    let mut templates: Vec<String> = openapi.paths.paths.keys().cloned().collect();
    templates.extend([
        OPENAPI_PATH.to_owned(),
        DOCS_PATH.to_owned(),
        format!("{DOCS_PATH}/"),
        format!("{DOCS_PATH}/{{*rest}}"),
    ]);
    templates.extend(extra.templates);
    let labels = RouteLabels::new(templates.iter().map(String::as_str));
    let produces = negotiation::Produces::from_openapi(
        &serde_json::to_value(&openapi).expect("the OpenAPI document is JSON"),
    );
    let docs = Router::from(SwaggerUi::new(DOCS_PATH).url(OPENAPI_PATH, openapi))
        .layer(axum::middleware::map_response(docs_security_headers));
    let timeout = state.settings.request_timeout();
    let cors = state.settings.cors_origins.as_deref().map(cors_layer);
    let router = api
        .merge(docs)
        .merge(extra.router)
        .fallback(answers::not_found)
        .with_state(state);
    layers::around(router, labels, produces, timeout, cors)
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
            answers::REQUEST_ID,
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            answers::REQUEST_ID,
            crate::limits::RATELIMIT,
            crate::limits::RATELIMIT_POLICY,
        ])
        .max_age(std::time::Duration::from_secs(600))
        // tower-http 0.7 derives `Vary` from what varies (here `origin` alone, none for `*`);
        // 0.6 always sent all three, and larder keeps that answer.
        .vary(tower_http::cors::Vary::list(
            tower_http::cors::preflight_request_headers(),
        ))
}
