//! The allocator: mimalloc, for Rust and, through `override`, for the C
//! libraries (librdkafka, zstd).
//!
//! One setting differs from mimalloc's defaults: freed memory is kept for
//! reuse rather than handed back to the system after a delay. parquet-rs
//! compresses each page through a new zstd stream, which allocates and
//! frees a few megabytes; handed back, those pages came again from the
//! kernel, zeroed, thousands of times a second. Keeping them took the
//! national sink benchmark's system time from about 6 s to 2 s and its
//! wall time down by about a tenth, for about 70 MiB more at its peak
//! (`docs/performance.md`). The process's resident memory therefore stays
//! at its peak. `MIMALLOC_PURGE_DELAY` in the environment overrides this.

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (v2 and v3); the
/// `libmimalloc-sys` bindings do not name it.
const PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Apply the setting, unless the environment chose one. Call first thing
/// in `main`.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mimalloc is linked in (the global allocator, `override`);
    // setting an option is thread-safe and takes effect at its next
    // purge decision.
    unsafe { mi_option_set(PURGE_DELAY, -1) };
}
