//! The dependency direction (docs/architecture.md): `server → http → {jobs, auth, limits} →
//! store → domain`, with `app` above everything and `config`/`telemetry` usable by every
//! layer above the domain. A file that names a module of a higher layer, or of a sibling in
//! the middle layer, fails this test with the file and the name.

use std::path::{Path, PathBuf};

/// The layer a top-level module belongs to; a module may name modules of lower layers only.
fn layer(module: &str) -> Option<u8> {
    Some(match module {
        "domain" => 0,
        "config" => 1,
        "telemetry" => 2,
        "store" => 3,
        "jobs" | "auth" | "limits" => 4,
        "http" => 5,
        "server" => 6,
        "app" => 7,
        _ => return None,
    })
}

/// The top-level module a source file belongs to (`src/http/items.rs` → `http`).
fn module_of(file: &Path, src: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// Every `crate::<module>` a file names (in code or in doc links alike).
fn named_modules(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .map(|(at, _)| {
            text[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn no_layer_names_a_higher_one() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let own = module_of(file, &src);
        let Some(own_layer) = layer(&own) else {
            continue; // main.rs and lib.rs stand outside the layers
        };
        let text = std::fs::read_to_string(file).unwrap();
        for named in named_modules(&text) {
            let Some(named_layer) = layer(&named) else {
                continue;
            };
            let upward = named_layer > own_layer;
            let sideways = named_layer == own_layer && named != own;
            let domain_reaches_out = own == "domain" && named != "domain";
            if upward || sideways || domain_reaches_out {
                violations.push(format!(
                    "{} ({own}) names crate::{named}",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(
        violations.is_empty(),
        "dependencies must point down (server → http → {{jobs, auth, limits}} → store → domain):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_finds_what_it_looks_for() {
    assert_eq!(
        named_modules("use crate::http::error::ApiError; crate::store::Db"),
        ["http", "store"]
    );
    assert!(layer("http") > layer("store"));
    assert!(layer("server") > layer("http"));
}
