//! Library behind the `k8s-nokmem` binary. One module per concern; see README.md.

pub mod cli;
pub mod config;
pub mod gobin;
pub mod manifest;
pub mod notes;
pub mod paths;
pub mod systemd;
