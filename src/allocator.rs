//! The allocator: mimalloc, for Rust and, through `override`, for the C
//! libraries (librdkafka, zstd).
//!
//! The sink and the processors change one setting: freed memory is kept
//! for reuse rather than handed back to the system after a delay.
//! parquet-rs compresses each page through a new zstd stream, whose
//! buffers are allocated and freed again for every page, and a processor's
//! state grows while its transactions' buffers come and go; handed back,
//! that memory came again from the kernel, zeroed, page after page. What
//! keeping it saves, and costs at the peak, is in `docs/performance.md`.
//! The producer keeps mimalloc's default, which returns memory: its
//! memory bounds were measured with it. `MIMALLOC_PURGE_DELAY` in the
//! environment overrides this.

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (v2 and v3); the
/// `libmimalloc-sys` bindings do not name it.
const PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Keep freed memory from now on, unless the environment chose a purge
/// delay.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mimalloc is linked in (the global allocator, `override`);
    // setting an option is thread-safe and takes effect at its next
    // purge decision.
    unsafe { mi_option_set(PURGE_DELAY, -1) };
}
