//! Fault injection for the tests: `K8S_NOKMEM_FAILPOINT=<step>[:error|:abort]` (see the
//! [`crate::journal`] docs).

use anyhow::anyhow;
use log::warn;

use super::Step;

/// The fault-injection variable (see the module docs).
pub const FAILPOINT_ENV: &str = "K8S_NOKMEM_FAILPOINT";

/// What a failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    Error,
    Abort,
}

/// A parsed `K8S_NOKMEM_FAILPOINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failpoint {
    /// 1-based index, or a step name.
    pub at: FailAt,
    pub mode: FailMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailAt {
    Index(usize),
    Name(String),
}

impl Failpoint {
    /// `3`, `divert`, `place:abort`, `5:error` (pure).
    pub fn parse(spec: &str) -> Option<Failpoint> {
        let (at, mode) = match spec.trim().rsplit_once(':') {
            Some((at, "abort")) => (at, FailMode::Abort),
            Some((at, "error")) => (at, FailMode::Error),
            Some(_) => return None,
            None => (spec.trim(), FailMode::Error),
        };
        if at.is_empty() {
            return None;
        }
        let at = match at.parse::<usize>() {
            Ok(0) => return None,
            Ok(i) => FailAt::Index(i),
            Err(_) => FailAt::Name(at.to_string()),
        };
        Some(Failpoint { at, mode })
    }

    /// From the environment; a set but unparsable value is an error.
    pub fn from_env() -> anyhow::Result<Option<Failpoint>> {
        let Some(spec) = std::env::var_os(FAILPOINT_ENV) else {
            return Ok(None);
        };
        let spec = spec.to_string_lossy();
        if spec.is_empty() {
            return Ok(None);
        }
        let fp = Failpoint::parse(&spec).ok_or_else(|| {
            anyhow!("{FAILPOINT_ENV}='{spec}' is not <step index or name>[:error|:abort]")
        })?;
        warn!("test failpoint armed: {FAILPOINT_ENV}={spec}");
        Ok(Some(fp))
    }

    /// Index (0-based) of the step it fires at.
    pub(super) fn index_in(&self, steps: &[Step]) -> Option<usize> {
        match &self.at {
            FailAt::Index(i) => Some(i - 1).filter(|i| *i < steps.len()),
            FailAt::Name(n) => steps.iter().position(|s| s.name() == n),
        }
    }
}
