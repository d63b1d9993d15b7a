//! Writes the CRD manifests built from the Rust types:
//! `cargo run -p pilotfish-crds --bin gen-crds [OUT_DIR]` (default `crds/manifests`).

use std::path::PathBuf;

use pilotfish_crds::manifests::{MANIFEST_DIR, manifest_files};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MANIFEST_DIR));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for file in manifest_files()? {
        let path = dir.join(&file.name);
        std::fs::write(&path, &file.contents)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
