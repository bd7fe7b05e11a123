//! Compiles `proto/` (Istio's certificate service) with protox, a protobuf compiler in Rust,
//! and generates the messages and the tonic service with tonic-prost-build: no `protoc`.

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("istio/v1/auth/ca.proto");
    println!("cargo::rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root]).expect("proto/ compiles");
    tonic_prost_build::configure()
        .compile_fds(descriptors)
        .expect("the certificate service generates");
}
