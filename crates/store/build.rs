//! Embeds the migrations: `OUT_DIR/migrations.rs` lists each backend's
//! files (name, contents through `include_str!`), in order, for
//! `store::migrations` (sqlx's `migrate!` did this, at the cost of
//! building its drivers twice: once more for the proc macro).

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("migrations");
    let mut code = String::new();
    for backend in ["sqlite", "postgres"] {
        let dir = root.join(backend);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        writeln!(
            code,
            "pub(super) const {}: &[(&str, &str)] = &[",
            backend.to_uppercase()
        )
        .unwrap();
        for file in files {
            let name = file.file_name().unwrap().to_str().unwrap();
            // Relative to the package, not an absolute path: another
            // checkout that builds into the same target directory may
            // reuse this output, and must embed its own files.
            let path = format!("/migrations/{backend}/{name}");
            writeln!(
                code,
                "    ({name:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), {path:?}))),"
            )
            .unwrap();
        }
        code.push_str("];\n");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("migrations.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
