//! The benchmark report: runs `storm` and `export_bench`, and writes `docs/benchmarks.md`
//! with its plots in `docs/img/` (see `src/bin/report.rs`).

pub mod data;
pub mod model;
pub mod plots;
pub mod render;
pub mod run;

#[cfg(test)]
mod tests;
