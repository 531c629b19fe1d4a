//! The OpenAPI document's frame: info, the security scheme, shared schemas. The paths come
//! from the handlers' own annotations (see `http::router`).

use utoipa::openapi::content::Content;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{Flow, OAuth2, Password, Scopes, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::error::{FieldErrorSchema, ProblemBody, ValidationProblemBody};

#[derive(OpenApi)]
#[openapi(
    info(title = "larder", description = "An items-and-users JSON API whose every answer carries the status code the HTTP standards ask for."),
    components(schemas(ProblemBody, ValidationProblemBody, FieldErrorSchema)),
    modifiers(&BearerScheme),
    tags(
        (name = "users"), (name = "auth"), (name = "items"), (name = "jobs"),
        (name = "limits"), (name = "operations"),
    )
)]
pub struct ApiDoc;

/// The OAuth2 password flow with `/auth/token` as token URL, named `bearer`.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::OAuth2(OAuth2::new([Flow::Password(Password::new(
                "/auth/token",
                Scopes::new(),
            ))])),
        );
    }
}

/// Any operation can meet a fault: 500 (a database error, a panic) and 503 (the database
/// cannot be reached, the pool is exhausted, the request timed out, the database file is
/// gone or unwritable); every operation that writes, 507 (the disk is full). Listed once,
/// here, for every operation instead of in each annotation; applied once the handlers'
/// paths have been collected (see `http::api`).
pub struct ServerFaults;

/// `POST` routes that store nothing, so cannot meet a full disk.
const READ_ONLY_POSTS: [&str; 2] = ["/validate", "/auth/token"];

fn problem_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/problem+json",
        Content::new(Some(RefOr::Ref(Ref::from_schema_name("ProblemBody")))),
    )
}

impl Modify for ServerFaults {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let writes = !READ_ONLY_POSTS.contains(&path.as_str());
            for operation in [
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            .filter(|_| writes)
            {
                operation
                    .responses
                    .responses
                    .entry("507".to_string())
                    .or_insert_with(|| {
                        problem_response(
                            "Insufficient storage: the disk is full; nothing of the request was kept",
                        )
                        .build()
                        .into()
                    });
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                responses.entry("500".to_string()).or_insert_with(|| {
                    problem_response("Internal server error or database error")
                        .build()
                        .into()
                });
                responses.entry("503".to_string()).or_insert_with(|| {
                    problem_response(
                        "The database is unavailable, its file is gone or unwritable, or the request timed out",
                    )
                        .header(
                            "Retry-After",
                            HeaderBuilder::new()
                                .schema(Some(Object::with_type(Type::Integer)))
                                .description(Some("Seconds to wait before retrying"))
                                .build(),
                        )
                        .build()
                        .into()
                });
            }
        }
    }
}
