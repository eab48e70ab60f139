//! Generated code for the Tessera gRPC contract (`proto/tessera/v1`).
//!
//! Nothing but generated code lives here: the domain never sees these types;
//! each service turns them into domain commands at its edge.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// `tessera.v1`: every service, message and enum of the contract.
pub mod v1 {
    tonic::include_proto!("tessera.v1");
}

/// The encoded `FileDescriptorSet` of the contract, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tessera_descriptor.bin"));

/// `Debug` for the messages that carry a token or refresh token: the type
/// name only, so a stray `{:?}` can never print a credential. (The build
/// script tells prost not to derive `Debug` for exactly these types.)
macro_rules! redacted_debug {
    ($($ty:ident),* $(,)?) => {$(
        impl std::fmt::Debug for v1::$ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($ty), " { [redacted] }"))
            }
        }
    )*};
}

redacted_debug!(
    VerifyRequest,
    RevokeRequest,
    RefreshRequest,
    RedeemPurposeTokenRequest,
    IssueResponse,
    RefreshResponse,
    IssuePurposeTokenResponse,
);
