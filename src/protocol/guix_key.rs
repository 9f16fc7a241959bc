//! (Guix protocol; being written.)
