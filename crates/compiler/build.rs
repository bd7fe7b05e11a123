//! Finds the protobuf descriptor set that the `envoy-types` crate ships (`types.bin`) and makes
//! it available to `include_bytes!`, so Envoy resources can be printed as JSON with their real
//! field names. The crate's sources are in Cargo's registry (the version is pinned in the
//! workspace); `cargo metadata` is the fallback for other layouts.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const CRATE_DIR: &str = "envoy-types-0.7.7";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = from_registry()
        .or_else(from_metadata)
        .expect("the envoy-types sources (a dependency) are on disk");
    std::fs::copy(&source, out.join("envoy_types.bin"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", source.display()));
}

fn descriptor_file(crate_dir: &Path) -> Option<PathBuf> {
    let file = crate_dir.join("src/generated/types.bin");
    file.is_file().then_some(file)
}

fn from_registry() -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let src = home.join("registry/src");
    std::fs::read_dir(src)
        .ok()?
        .filter_map(Result::ok)
        .find_map(|index| descriptor_file(&index.path().join(CRATE_DIR)))
}

fn from_metadata() -> Option<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = env::var_os("CARGO_MANIFEST_DIR")?;
    let target = env::var("TARGET").ok()?;
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            &target,
        ])
        .current_dir(manifest)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split("\"manifest_path\":\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .filter(|p| p.contains(CRATE_DIR))
        .find_map(|p| descriptor_file(Path::new(p).parent()?))
}
