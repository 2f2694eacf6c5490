pub mod check;
pub mod produce;
pub mod schemas;
pub mod simulate;
