//! The route template (`/items/{item_id}`) a path belongs to, for the metrics' labels.
//!
//! The request context sits outside the router, where axum's `MatchedPath` does not reach;
//! handing it out from inside would take a layer around every route, and in axum every such
//! layer is one more boxed service cloned and one more boxed future per request. So the
//! request context matches the path itself, with the router's own matcher (matchit) over
//! the same templates.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

/// The label of requests no route matches (a client can send any number of paths; they
/// must not each become a metric series).
pub const UNMATCHED: &str = "unmatched";

#[derive(Debug, Clone)]
pub struct RouteLabels {
    matcher: matchit::Router<&'static str>,
}

impl RouteLabels {
    /// A matcher over `templates`, in axum's (and OpenAPI's) `{name}` / `{*rest}` syntax.
    pub fn new<'a>(templates: impl IntoIterator<Item = &'a str>) -> Self {
        let mut matcher = matchit::Router::new();
        for template in templates {
            // A template given twice, or one axum would refuse too, labels nothing new.
            let _ = matcher.insert(template, intern(template));
        }
        RouteLabels { matcher }
    }

    /// The template `path` matches, or [`UNMATCHED`].
    pub fn label(&self, path: &str) -> &'static str {
        self.matcher
            .at(path)
            .map_or(UNMATCHED, |found| *found.value)
    }
}

/// Templates live as long as the process: a few dozen strings, stored once however many
/// services (tests start many) are built.
fn intern(template: &str) -> &'static str {
    static TEMPLATES: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);
    let mut templates = TEMPLATES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = templates.get(template) {
        return known;
    }
    let leaked: &'static str = Box::leak(template.to_owned().into_boxed_str());
    templates.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> RouteLabels {
        RouteLabels::new(["/healthz", "/items", "/items/{item_id}", "/docs/{*rest}"])
    }

    #[test]
    fn a_path_is_labelled_with_its_template() {
        let labels = labels();
        assert_eq!(labels.label("/healthz"), "/healthz");
        assert_eq!(labels.label("/items"), "/items");
        assert_eq!(labels.label("/items/42"), "/items/{item_id}");
        assert_eq!(labels.label("/docs/swagger-ui.css"), "/docs/{*rest}");
    }

    #[test]
    fn a_path_no_route_matches_is_unmatched() {
        let labels = labels();
        assert_eq!(labels.label("/items/42/extra"), UNMATCHED);
        assert_eq!(labels.label("/healthz/"), UNMATCHED);
        assert_eq!(labels.label("/nope"), UNMATCHED);
    }

    #[test]
    fn templates_are_stored_once() {
        let first = RouteLabels::new(["/items/{item_id}"]).label("/items/1");
        let second = RouteLabels::new(["/items/{item_id}"]).label("/items/2");
        assert!(std::ptr::eq(first, second));
    }
}
