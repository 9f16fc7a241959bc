//! NAR path: streaming decompression, hashing, verification and the content-addressed store.
