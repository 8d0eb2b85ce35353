//! Library behind the `k8s-nokmem` binary. One module per concern; see README.md.

pub mod cli;
pub mod cmdline;
pub mod command;
pub mod config;
pub mod divert;
pub mod dpkg;
pub mod fs;
pub mod gobin;
pub mod journal;
pub mod lock;
pub mod logging;
pub mod manifest;
pub mod notes;
pub mod outcome;
pub mod output;
pub mod paths;
pub mod policy;
pub mod reboot;
pub mod signals;
pub mod state;
pub mod status;
pub mod swap;
pub mod systemd;
pub mod targets;
pub mod verify;
