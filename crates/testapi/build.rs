//! Compiles the Kubernetes API's `generated.proto` files vendored under `proto/k8s` (k8s.io/api,
//! apimachinery and apiextensions-apiserver at v0.35) with protox, a protobuf compiler in Rust,
//! into one encoded `FileDescriptorSet` that `protobuf` loads as a descriptor pool: no
//! `protoc`, and no network at build time.

use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/k8s");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    println!("cargo::rerun-if-changed={}", root.display());
    for f in &files {
        println!("cargo::rerun-if-changed={}", f.display());
    }
    let mut compiler = protox::Compiler::new([&root]).expect("proto/k8s is readable");
    compiler.include_imports(true);
    compiler
        .open_files(&files)
        .expect("the vendored Kubernetes protos compile");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(
        out.join("k8s_descriptors.bin"),
        compiler.encode_file_descriptor_set(),
    )
    .expect("OUT_DIR is writable");
}

/// Every `.proto` file under `dir`.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("proto/k8s is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}
