pub mod check;
pub mod schemas;
pub mod simulate;
