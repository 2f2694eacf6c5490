//! Producers: the edge of skolflode, where vendor data comes in.
//!
//! Personal identity numbers are validated and pseudonymised here and never
//! travel further; everything downstream sees person keys.
//!
//! - [`civic`]: parsing and validating Swedish personal identity numbers
//!   and coordination numbers in the forms vendors send (12 or 10 digits,
//!   with or without `-`/`+`), expanded to the 12-digit form.
//! - [`pseudonym`]: the person-key contract: lowercase hex of
//!   `HMAC-SHA256(secret, civic12)`, or of `"<source>:<person id>"` for
//!   persons without a valid number. The secret comes from configuration
//!   and is never printed.
//! - [`detect`]: change detection by content hash, and the events it
//!   yields.
//! - [`endpoint`]: the SS 12000 endpoints read, as one closed set.
//! - [`seal`]: dead letters redacted, their raw bytes encrypted to the
//!   operators' age recipients.
//! - [`metrics`]: Prometheus metrics.
//! - [`runner`]: one vendor connection read continuously and published
//!   exactly once, with its state in a compacted topic.
//! - [`ss12000`]: SS 12000 JSON to skolflode's entities, leniently, with
//!   quality findings and dead-letter reasons.
//!

pub mod civic;
pub mod detect;
pub mod endpoint;
pub mod metrics;
pub mod pseudonym;
pub mod runner;
pub mod seal;
pub mod ss12000;

#[doc(hidden)]
pub use skolflode_schemas::entities as __entities;
