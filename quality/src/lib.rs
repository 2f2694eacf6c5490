//! Data-quality feedback for the school organisers who share their data.
//!
//! `skolflode quality report` gathers, for one organiser (huvudman) and a
//! range of ISO weeks:
//!
//! - [`findings`]: the validation rules' findings (`docs/quality.md`) as
//!   they stand: the latest event of each finding on the findings topics;
//! - [`organisations`]: which school units are the organiser's, from the
//!   vendors' organisation trees on the change topic;
//! - [`absence`]: absence statistics from the weekly (and, for grades, the
//!   yearly) attendance registers;
//! - [`coverage`]: per school unit and week, the share of lessons with a
//!   teacher, of lessons and pupils' lessons reported, and of the pupil
//!   register's pupils with lessons; attendance by weekday (the
//!   processors' coverage topic);
//! - [`report`]: the worst problems first, counts by unit and rule, trends
//!   over the weeks, examples by entity id, and the absence statistics, as
//!   JSON and as a self-contained HTML page ([`html`], charts drawn as
//!   inline SVG by [`charts`]).
//!
//! Nothing personal goes in: findings carry vendor ids only, and absence is
//! reported as aggregates over pseudonymised pupils, never per pupil.

pub mod absence;
pub mod charts;
pub mod config;
pub mod coverage;
pub mod error;
pub mod findings;
pub mod html;
pub mod organisations;
pub mod report;
pub mod topics;
pub mod weeks;

pub use config::QualityConfig;
pub use error::QualityError;
