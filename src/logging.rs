//! Log lines on stderr: `k8s-nokmem: <level>: <msg>`, no timestamp (dpkg and journald add
//! their own). Under our systemd units every line starts with its sd-daemon priority
//! (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug and trace: `sd-daemon(3)`), which
//! journald (systemd 229 included) strips and stores as the entry's priority, so that
//! `journalctl -p warning -u k8s-nokmem-verify` shows the warnings.
//!
//! When: the units set `K8S_NOKMEM_LOG_PREFIX=sd-daemon` (systemd 229 does not set
//! `JOURNAL_STREAM`, which arrived in 231); else when `$JOURNAL_STREAM` names stderr's
//! device and inode (a run under `systemd-run` or another unit on systemd >= 231).
//! `K8S_NOKMEM_LOG_PREFIX=none` turns it off.

use std::io::Write;

use log::{Level, LevelFilter};

/// The variable our unit files set to [`SD_DAEMON`].
pub const PREFIX_ENV: &str = "K8S_NOKMEM_LOG_PREFIX";
/// The value of [`PREFIX_ENV`] that turns the priority prefix on.
pub const SD_DAEMON: &str = "sd-daemon";
/// The value of [`PREFIX_ENV`] that turns it off, whatever stderr is.
pub const NONE: &str = "none";

/// How each stderr line starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `k8s-nokmem: warn: …` (a terminal, apt's term.log).
    Plain,
    /// `<4>k8s-nokmem: warn: …` (journald).
    SdDaemon,
}

impl Style {
    /// From the environment and stderr.
    pub fn detect() -> Style {
        // dev_t and ino_t are not u64 on every target
        #[allow(clippy::unnecessary_cast)]
        let stderr = nix::sys::stat::fstat(std::io::stderr())
            .ok()
            .map(|st| (st.st_dev as u64, st.st_ino as u64));
        Style::from_env(
            std::env::var(PREFIX_ENV).ok().as_deref(),
            std::env::var("JOURNAL_STREAM").ok().as_deref(),
            stderr,
        )
    }

    /// The decision (pure): the explicit variable wins, else `JOURNAL_STREAM` (`DEV:INODE`,
    /// decimal) must match stderr's `(dev, inode)`.
    pub fn from_env(
        prefix: Option<&str>,
        journal_stream: Option<&str>,
        stderr: Option<(u64, u64)>,
    ) -> Style {
        match prefix.map(str::trim) {
            Some(SD_DAEMON) => return Style::SdDaemon,
            Some(NONE) => return Style::Plain,
            _ => {}
        }
        let stream = journal_stream.and_then(|s| {
            let (dev, ino) = s.trim().split_once(':')?;
            Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?))
        });
        match (stream, stderr) {
            (Some(stream), Some(stderr)) if stream == stderr => Style::SdDaemon,
            _ => Style::Plain,
        }
    }

    /// `<N>` for `level`, or nothing.
    pub fn prefix(self, level: Level) -> &'static str {
        match self {
            Style::Plain => "",
            Style::SdDaemon => match level {
                Level::Error => "<3>",
                Level::Warn => "<4>",
                Level::Info => "<6>",
                Level::Debug | Level::Trace => "<7>",
            },
        }
    }

    /// `text` with every line prefixed (journald reads a stream line by line, so a message
    /// that spans lines, such as a command's stderr, keeps its priority on each), ending in
    /// a newline.
    pub fn lines(self, level: Level, text: &str) -> String {
        let prefix = self.prefix(level);
        let mut out = String::with_capacity(text.len() + 8);
        for line in text.trim_end_matches('\n').split('\n') {
            out.push_str(prefix);
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// One log record as written to stderr: `k8s-nokmem: <level>: <msg>`, each line prefixed.
pub fn format_record(style: Style, level: Level, msg: &str) -> String {
    let text = format!("k8s-nokmem: {}: {msg}", level.as_str().to_lowercase());
    style.lines(level, &text)
}

/// Install the logger: our crate at `level`, others at warn at most; `RUST_LOG` wins.
pub fn init(level: LevelFilter, style: Style) {
    let mut builder = env_logger::Builder::new();
    builder
        .filter_module("k8s_nokmem", level)
        .filter_level(LevelFilter::Warn.min(level))
        .format(move |buf, record| {
            let text = format_record(style, record.level(), &record.args().to_string());
            buf.write_all(text.as_bytes())
        });
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    let _ = builder.try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_carries_its_priority() {
        let sd = Style::SdDaemon;
        let cases = [
            (Level::Error, "failed", "<3>k8s-nokmem: error: failed\n"),
            (Level::Warn, "skew", "<4>k8s-nokmem: warn: skew\n"),
            (
                Level::Info,
                "install [1/12] ok",
                "<6>k8s-nokmem: info: install [1/12] ok\n",
            ),
            (Level::Debug, "d", "<7>k8s-nokmem: debug: d\n"),
            (Level::Trace, "t", "<7>k8s-nokmem: trace: t\n"),
            (
                Level::Warn,
                "dpkg-divert said:\n  x\n  y",
                "<4>k8s-nokmem: warn: dpkg-divert said:\n<4>  x\n<4>  y\n",
            ),
        ];
        for (level, msg, want) in cases {
            assert_eq!(format_record(sd, level, msg), want, "case {level} {msg:?}");
        }
        assert_eq!(
            format_record(Style::Plain, Level::Warn, "a\nb"),
            "k8s-nokmem: warn: a\nb\n"
        );
    }

    #[test]
    fn detection() {
        let err = Some((64769, 1234));
        let cases = [
            (
                "unit variable",
                Some("sd-daemon"),
                None,
                err,
                Style::SdDaemon,
            ),
            (
                "unit variable, stderr elsewhere",
                Some("sd-daemon"),
                Some("1:2"),
                err,
                Style::SdDaemon,
            ),
            (
                "journal stream is stderr",
                None,
                Some("64769:1234"),
                err,
                Style::SdDaemon,
            ),
            (
                "journal stream is not stderr",
                None,
                Some("64769:1235"),
                err,
                Style::Plain,
            ),
            (
                "stream inherited, stderr unknown",
                None,
                Some("64769:1234"),
                None,
                Style::Plain,
            ),
            (
                "turned off",
                Some("none"),
                Some("64769:1234"),
                err,
                Style::Plain,
            ),
            (
                "unknown value: detect",
                Some("journal"),
                Some("64769:1234"),
                err,
                Style::SdDaemon,
            ),
            ("garbled stream", None, Some("64769"), err, Style::Plain),
            ("nothing", None, None, err, Style::Plain),
        ];
        for (case, prefix, stream, stderr, want) in cases {
            assert_eq!(
                Style::from_env(prefix, stream, stderr),
                want,
                "case '{case}'"
            );
        }
    }

    /// Every unit that runs the helper sets the variable in its [Service] section.
    #[test]
    fn our_units_ask_for_priorities() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
        let want = format!("Environment={PREFIX_ENV}={SD_DAEMON}");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("service") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            if !text.contains("/usr/sbin/k8s-nokmem") {
                continue;
            }
            let service = text
                .split("\n[Service]\n")
                .nth(1)
                .map(|s| s.split("\n[").next().unwrap_or(s))
                .unwrap_or_default();
            assert!(
                service.lines().any(|l| l.trim() == want),
                "{} lacks '{want}' in [Service]",
                path.display()
            );
            checked += 1;
        }
        assert!(
            checked >= 2,
            "found {checked} units running the helper in {}",
            dir.display()
        );
    }
}
