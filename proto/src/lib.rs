//! Generated gRPC code for the tss-node APIs (`proto/tss.proto`).
#![allow(missing_docs, clippy::all)]

/// Version 1 of the API.
pub mod v1 {
    tonic::include_proto!("tss.v1");
}

#[cfg(test)]
mod tests {
    /// The wire contract: every message, field number and type, enum value
    /// and RPC of `tss.proto`. Peers and clients of other versions rely on
    /// it; a field is only ever added or reserved, never renumbered. After a
    /// deliberate addition, copy `$OUT_DIR/descriptor.txt` (the path is in
    /// the failure message) over `descriptor.snapshot`.
    #[test]
    #[allow(non_snake_case)]
    fn descriptor__should_match_the_committed_snapshot() {
        let built = include_str!(concat!(env!("OUT_DIR"), "/descriptor.txt"));
        let committed = include_str!("../descriptor.snapshot");
        if built != committed {
            let first = built
                .lines()
                .zip(committed.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(built.lines().count().min(committed.lines().count()));
            panic!(
                "tss.proto's descriptor differs from proto/descriptor.snapshot at line {} \
                 (built: {:?}, committed: {:?}); built file: {}/descriptor.txt",
                first + 1,
                built.lines().nth(first),
                committed.lines().nth(first),
                env!("OUT_DIR")
            );
        }
    }
}
