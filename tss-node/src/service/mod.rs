//! gRPC services: [`signer`] (client API) and [`peer`] (party to party).

pub mod peer;
pub mod signer;
