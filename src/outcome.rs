//! What a command found ([`Outcome`]), mapped to the exit code shared by every subcommand.

/// Exit code: checks ran and found problems.
pub const EXIT_PROBLEM: u8 = 1;
/// Exit code: could not run (usage, I/O, D-Bus, dpkg-divert) or the result is unknown.
pub const EXIT_ERROR: u8 = 2;

/// What a command found, mapped to the exit code shared by every subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// 0: all good.
    Ok,
    /// 2: could not tell (node-problem-detector's "unknown").
    Unknown,
    /// 1: a definite problem; outranks unknown.
    Problem,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Problem => EXIT_PROBLEM,
            Outcome::Unknown => EXIT_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_outranks_unknown() {
        assert!(Outcome::Problem > Outcome::Unknown && Outcome::Unknown > Outcome::Ok);
        assert_eq!(
            [Outcome::Unknown, Outcome::Problem].into_iter().max(),
            Some(Outcome::Problem)
        );
    }
}
