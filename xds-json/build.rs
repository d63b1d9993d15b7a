//! Compiles the Envoy v3 .proto files that envoy-types ships (the sources
//! of its generated Rust) into one FileDescriptorSet, which the library
//! embeds for prost-reflect. protox is pure Rust: no protoc needed.
//!
//! Every `envoy/**/v3/*.proto` is compiled, not only what Pilotfish emits
//! today: any extension may turn up inside an `Any`, and a type missing from
//! the pool would make that resource fail to convert.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};
use serde_json::Value;

/// Include roots inside envoy-types' `proto/` directory, as its own code
/// generation uses them (imports are written relative to these).
const INCLUDE_ROOTS: &[&str] = &[
    "data-plane-api",
    "xds",
    "googleapis",
    "protoc-gen-validate",
    "cel-spec/proto",
    "opentelemetry-proto",
    "client_model",
    "ratelimit",
];

fn main() {
    if let Err(message) = run() {
        panic!("pilotfish-xds-json build: {message}");
    }
}

fn run() -> Result<(), String> {
    let metadata = cargo_metadata()?;
    let proto_root = envoy_types_dir(&metadata)?.join("proto");
    let includes: Vec<PathBuf> = INCLUDE_ROOTS.iter().map(|r| proto_root.join(r)).collect();
    let envoy_root = proto_root.join("data-plane-api");
    let mut files = Vec::new();
    collect_v3_protos(&envoy_root, &envoy_root.join("envoy"), &mut files)?;
    if files.is_empty() {
        return Err(format!(
            "no envoy/**/v3/*.proto under {}",
            envoy_root.display()
        ));
    }
    files.sort();

    let descriptors = compile(&includes, &files)?;
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    fs::write(out.join("envoy_descriptors.bin"), descriptors)
        .map_err(|e| format!("writing the descriptor set: {e}"))?;

    println!("cargo:rerun-if-changed=build.rs");
    // A new envoy-types version lives in a new directory, so the lock file
    // (not the old proto directory) is what tells us to recompile.
    if let Some(root) = metadata["workspace_root"].as_str() {
        println!("cargo:rerun-if-changed={root}/Cargo.lock");
    }
    println!("cargo:rerun-if-changed={}", proto_root.display());
    Ok(())
}

/// Compiles `files` into one encoded FileDescriptorSet (imports included,
/// source info left out).
///
/// protox resolves a relative type name against every package loaded so
/// far, where protoc only looks at the packages of a file's direct imports.
/// So once e.g. `envoy/extensions/config/validators/...` is loaded,
/// `config.core.v3.DataSource` inside `envoy.extensions.filters...` resolves
/// to the nonexistent `envoy.extensions.config.core.v3.DataSource`. A file
/// that fails goes to the next compiler (a fresh one if none takes it), and
/// the batches are merged into one pool, which keeps one copy of the files
/// they share. `FIXUPS` covers the file whose own imports bring the clash.
fn compile(includes: &[PathBuf], files: &[PathBuf]) -> Result<Vec<u8>, String> {
    let new_compiler = || {
        let mut resolver = ChainFileResolver::new();
        for include in includes {
            resolver.add(IncludeFileResolver::new(include.clone()));
        }
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(WithFixups(resolver));
        compiler.include_imports(true).include_source_info(false);
        compiler
    };
    let mut batches = vec![new_compiler()];
    for file in files {
        if batches.iter_mut().any(|c| c.open_file(file).is_ok()) {
            continue;
        }
        let mut fresh = new_compiler();
        fresh
            .open_file(file)
            .map_err(|e| format!("compiling {}: {e}", file.display()))?;
        batches.push(fresh);
    }
    let mut pool = protox::prost_reflect::DescriptorPool::new();
    for batch in &batches {
        pool.decode_file_descriptor_set(batch.encode_file_descriptor_set().as_slice())
            .map_err(|e| format!("merging compiled batches: {e}"))?;
    }
    Ok(pool.encode_to_vec())
}

/// Relative type names that protox cannot resolve as protoc does (see
/// `compile`), spelled out fully qualified: (file, as written, as protoc
/// resolves it). A fixup whose text is gone in a newer Envoy is a no-op.
const FIXUPS: &[(&str, &str, &str)] = &[(
    "envoy/extensions/clusters/dynamic_forward_proxy/v3/cluster.proto",
    " common.dynamic_forward_proxy.v3.DnsCacheConfig ",
    " .envoy.extensions.common.dynamic_forward_proxy.v3.DnsCacheConfig ",
)];

struct WithFixups(ChainFileResolver);

impl FileResolver for WithFixups {
    fn resolve_path(&self, path: &Path) -> Option<String> {
        self.0.resolve_path(path)
    }

    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        let file = self.0.open_file(name)?;
        let mut fixups = FIXUPS.iter().filter(|(n, _, _)| *n == name).peekable();
        let (Some(_), Some(source)) = (fixups.peek(), file.source()) else {
            return Ok(file);
        };
        let fixed = fixups.fold(source.to_string(), |text, (_, written, qualified)| {
            text.replace(written, qualified)
        });
        File::from_source(name, &fixed)
    }
}

/// `cargo metadata` for this workspace, offline: the lock file already pins
/// envoy-types, and its sources are downloaded before build scripts run.
fn cargo_metadata() -> Result<Value, String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(
        env::var("CARGO_MANIFEST_DIR").map_err(|e| format!("CARGO_MANIFEST_DIR: {e}"))?,
    )
    .join("Cargo.toml");
    let output = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .map_err(|e| format!("running `{cargo} metadata`: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`{cargo} metadata` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("`cargo metadata` output: {e}"))
}

fn envoy_types_dir(metadata: &Value) -> Result<PathBuf, String> {
    let packages = metadata["packages"].as_array().into_iter().flatten();
    let manifest = packages
        .filter(|p| p["name"] == "envoy-types")
        .find_map(|p| p["manifest_path"].as_str())
        .ok_or("envoy-types is not in this workspace's dependency graph (cargo metadata)")?;
    let dir = Path::new(manifest)
        .parent()
        .ok_or_else(|| format!("envoy-types manifest path {manifest} has no parent"))?;
    if !dir.join("proto").is_dir() {
        return Err(format!(
            "envoy-types at {} ships no proto/ directory",
            dir.display()
        ));
    }
    Ok(dir.to_path_buf())
}

/// Paths (relative to `root`, as protox wants them) of every .proto file in
/// a `v3` directory below `dir`.
fn collect_v3_protos(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .path();
        if path.is_dir() {
            collect_v3_protos(root, &path, files)?;
        } else if path.extension().is_some_and(|e| e == "proto")
            && dir.file_name().is_some_and(|d| d == "v3")
            && let Ok(relative) = path.strip_prefix(root)
        {
            files.push(relative.to_path_buf());
        }
    }
    Ok(())
}
