//! Compiles the gRPC API (`proto/cerebelum/v1/cerebelum.proto`) with protox,
//! a pure-Rust protobuf compiler, so no `protoc` is needed. The encoded
//! descriptor set is kept for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = root.join("cerebelum/v1/cerebelum.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("cerebelum_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // Our codec: a message that does not decode is INVALID_ARGUMENT.
    tonic_prost_build::configure()
        .codec_path("crate::api::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
