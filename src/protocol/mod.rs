//! Pure wire formats: no I/O.
