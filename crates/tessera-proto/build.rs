//! Generates the gRPC code from `proto/` with protox, so no system `protoc` is
//! needed, and writes the encoded descriptor set used by gRPC reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "tessera/v1/common.proto",
        "tessera/v1/errors.proto",
        "tessera/v1/issuer.proto",
        "tessera/v1/keys.proto",
        "tessera/v1/introspection.proto",
        "tessera/v1/revocation.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("tessera_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Requests carry tokens: no `Debug` that could print one into a log.
        .skip_debug([
            ".tessera.v1.VerifyRequest",
            ".tessera.v1.RevokeRequest",
            ".tessera.v1.RefreshRequest",
            ".tessera.v1.RedeemPurposeTokenRequest",
            ".tessera.v1.IssueResponse",
            ".tessera.v1.RefreshResponse",
            ".tessera.v1.IssuePurposeTokenResponse",
        ])
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
