//! (Nix protocol; being written.)
