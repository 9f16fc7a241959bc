//! The quorum rule: (attestations, policy) -> decision. Pure.
