//! The vendor simulator: a municipality's school systems as the vendors
//! run them — overwriting history, sloppy data, flaky APIs — and the ground
//! truth that skolflode's registers are checked against.
//!
//! It is the oracle, so it shares no code with producers, processors or
//! sinks; a bug there cannot agree with itself here.
//!
//! - [`config`]: [`SimConfig`], presets and rates.
//! - [`plan`], [`calendar`], [`civic`], [`ids`]: timetables, the school
//!   year, fake civic numbers and deterministic ids.
//! - [`world`]: the generated municipality, with the vendor's view and the
//!   true history side by side.
//! - [`sim`]: time: lessons, attendance reports, corrections, teacher
//!   replacements, moves; [`truth`]: the weekly ground truth.
//! - [`ss12000`]: the SS 12000 JSON and paging, with [`page_json`] writing
//!   the bulk endpoints' items straight into the page body; [`server`]: the HTTP APIs
//!   (OAuth2, SS 12000, Skola24-style, control) with fault injection;
//!   [`skola24`]: the timetable vendor's own JSON.
//! - [`stream`]: a national week, one unit at a time, in bounded memory.
//! - [`spec`]: the SS 12000 OpenAPI specification's query parameters, read
//!   from its YAML, for the tests that hold requests to it.

pub mod calendar;
pub mod civic;
pub mod config;
pub mod ids;
pub mod page_json;
pub mod plan;
pub mod register;
pub mod server;
pub mod sim;
pub mod skola24;
pub mod spec;
pub mod ss12000;
pub mod stream;
pub mod truth;
pub mod world;

pub use config::SimConfig;
