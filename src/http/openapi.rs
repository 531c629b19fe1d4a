//! The OpenAPI document's frame: info, the security scheme, shared schemas. The paths come
//! from the handlers' own annotations (see `http::router`).

use utoipa::openapi::content::Content;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{Flow, OAuth2, Password, Scopes, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi, ToResponse};

use super::error::{FieldErrorSchema, PROBLEM_JSON, ProblemBody, ValidationProblemBody};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "larder",
        description = "An items-and-users JSON API whose every answer carries the status code the HTTP standards ask for.",
        license(name = "Proprietary", identifier = "LicenseRef-Proprietary"),
    ),
    // Relative to the document: a client is given the server's base URL.
    servers((url = "/", description = "The server that serves this document")),
    components(
        schemas(ProblemBody, ValidationProblemBody, FieldErrorSchema, super::items::ItemSort),
        responses(
            NotJson, Unauthorized, NotTheOwner, ItemNotFound, UserNotFound, BusyWriters,
            StillRunning, NotMatched, TooLarge, NotJsonMediaType, BadId, BadJobId, JobExpired,
            ServerError, Unavailable, DiskFull, NotAcceptable, UriTooLong, ConditionRequired,
        ),
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "users", description = "Registration, the caller's profile, and admin removal of users"),
        (name = "auth", description = "Bearer tokens from the OAuth2 password flow"),
        (name = "items", description = "Items: public reads with entity tags, owner-only conditional writes, idempotent creation"),
        (name = "jobs", description = "Background jobs: bulk item imports and their progress"),
        (name = "limits", description = "Request validation and the rate-limited data route"),
        (name = "operations", description = "Health, readiness and metrics for operators"),
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

/// An operation that names no security requirement is public: it says so with `security: []`
/// (what linters and client generators look for), set here once for all of them instead of
/// in each annotation; applied once the handlers' paths have been collected (see `http::api`).
pub struct PublicOperations;

impl Modify for PublicOperations {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                operation.security.get_or_insert_with(Vec::new);
            }
        }
    }
}

/// Every operation that uses the database can meet its faults: 500 (a database error) and
/// 503 (the database cannot be reached, the pool is exhausted, the database file is gone or
/// unwritable, the request timed out); every operation that writes, 507 (the disk is full).
/// Any request can be refused before routing: 406 (`Accept`) and 414 (the request target).
/// Listed once, here, instead of in each annotation; applied once the handlers' paths have
/// been collected (see `http::api`). What any request whatever may meet (a panic's 500, the
/// deadline's 503 on a route that never waits on the database) is in docs/contract.md,
/// "Everywhere", not on each operation: no test could make `/healthz` time out.
pub struct ServerFaults;

/// Routes that store nothing, so cannot meet a full disk.
const READ_ONLY_POSTS: [&str; 1] = ["/validate"];
/// Routes whose answer never depends on a database call succeeding (`/metrics` answers
/// without the job counts; `/readyz` documents its own 503).
const NO_DATABASE: [&str; 4] = ["/healthz", "/metrics", "/readyz", "/validate"];

fn problem_response(description: &str, schema: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        Content::new(Some(RefOr::Ref(Ref::from_schema_name(schema)))),
    )
}

fn header(description: &str, kind: Type) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(Object::with_type(kind)))
        .description(Some(description))
        .build()
}

/// The problem answers many operations share, each a component of the document that the
/// operations reference (`(status = 401, response = Unauthorized)`): one description of
/// each, here.
macro_rules! shared_problems {
    ($($name:ident: $schema:literal, $description:literal $(, $header:literal: $kind:expr => $header_doc:literal)?;)*) => {
        $(
            pub struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    let response = problem_response($description, $schema)
                        $(.header($header, header($header_doc, $kind)))?;
                    (stringify!($name), response.build().into())
                }
            }
        )*
    };
}

shared_problems! {
    NotJson: "ProblemBody", "The body is not JSON";
    Unauthorized: "ProblemBody", "No valid token",
        "WWW-Authenticate": Type::String => "Bearer, with error=\"invalid_token\" when a token was sent";
    NotTheOwner: "ProblemBody", "Not the owner, and the caller is not an admin";
    ItemNotFound: "ProblemBody", "Item not found";
    UserNotFound: "ProblemBody", "User not found";
    BusyWriters: "ProblemBody", "The item is being changed by others, try again";
    StillRunning: "ProblemBody", "The first request with this Idempotency-Key is still running";
    NotMatched: "ProblemBody", "A precondition does not hold: If-Match does not match the current ETag, the item changed after If-Unmodified-Since, or (on a write) If-None-Match matches";
    ConditionRequired: "ProblemBody", "LARDER_REQUIRE_IF_MATCH is on and the write has no If-Match";
    NotAcceptable: "ProblemBody", "Accept admits none of the media types the operation answers with";
    UriTooLong: "ProblemBody", "The request target is longer than 8192 bytes";
    TooLarge: "ProblemBody", "The body is too large";
    NotJsonMediaType: "ProblemBody", "The body is not application/json";
    BadId: "ValidationProblemBody", "The id is not an integer";
    BadJobId: "ValidationProblemBody", "The id is not a UUID";
    JobExpired: "ProblemBody", "Job expired: it finished longer than LARDER_JOB_RETENTION ago (only its id is remembered)";
    ServerError: "ProblemBody", "A database error";
    Unavailable: "ProblemBody", "The database is unavailable, its file is gone or unwritable, or the request timed out",
        "Retry-After": Type::Integer => "Seconds to wait before retrying";
    DiskFull: "ProblemBody", "Insufficient storage: the disk is full; nothing of the request was kept";
}

/// A reference to a shared response component.
pub fn shared<'r, R: ToResponse<'r>>() -> RefOr<Response> {
    RefOr::Ref(Ref::from_response_name(R::response().0))
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
                    .or_insert_with(shared::<DiskFull>);
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            let uses_database = !NO_DATABASE.contains(&path.as_str());
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                if uses_database {
                    responses
                        .entry("500".to_string())
                        .or_insert_with(shared::<ServerError>);
                    responses
                        .entry("503".to_string())
                        .or_insert_with(shared::<Unavailable>);
                }
                responses
                    .entry("406".to_string())
                    .or_insert_with(shared::<NotAcceptable>);
                responses
                    .entry("414".to_string())
                    .or_insert_with(shared::<UriTooLong>);
            }
        }
    }
}
