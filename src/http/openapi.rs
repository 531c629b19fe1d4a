//! The OpenAPI document's frame: info, the security scheme, shared schemas. The paths come
//! from the handlers' own annotations (see `http::router`).

use utoipa::openapi::security::{Flow, OAuth2, Password, Scopes, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{FieldError, ProblemBody, ValidationProblemBody};

#[derive(OpenApi)]
#[openapi(
    info(title = "larder", description = "An items-and-users JSON API whose every answer carries the status code the HTTP standards ask for."),
    components(schemas(ProblemBody, ValidationProblemBody, FieldError)),
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
