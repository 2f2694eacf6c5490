//! Reading SS 12000 v2 vendors.
//!
//! - [`client`]: the HTTP client: OAuth2, paging, retries, rate limits.
//! - [`json`]: a JSON tree borrowing from the page, for the mapping.
//! - [`time`]: dates and instants as vendors send them.
//! - [`map`]: SS 12000 JSON items to skolflode's Avro entities, leniently:
//!   what can be understood unambiguously is accepted and the repair is
//!   reported as a [`map::Finding`]; what cannot is a [`map::MapError`] for
//!   the dead-letter topic. Personal data other than the person key never
//!   leaves the mapping.

pub mod client;
pub mod json;
pub mod map;
pub mod time;
