//! The job kinds larder runs, one file each.

pub mod import_items;

/// The kind `POST /process` takes for an import.
pub const IMPORT_ITEMS: &str = "import_items";
