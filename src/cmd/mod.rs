pub mod check;
pub mod schemas;
