//! What the kernel says: its release, its command line (`cgroup.memory=nokmem`) and the
//! leak's messages in its log. Pure parsers over `&str`/`&[u8]`, and thin readers that take
//! a path.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::bounded;
use crate::fs::{FileError, WrapIo};

/// Kernel release, under the proc root.
pub const OSRELEASE: &str = "sys/kernel/osrelease";
/// Kernel command line, under the proc root.
pub const CMDLINE: &str = "cmdline";
/// The kernel log device: one record per read, `EAGAIN` at the end with `O_NONBLOCK`.
pub const KMSG: &str = "/dev/kmsg";
/// The boot parameter that switches kmem accounting off kernel-wide (Linux >= 4.6).
pub const NOKMEM_PARAM: &str = "cgroup.memory=nokmem";
/// From this release on, every v1 memory cgroup accounts kmem unless booted with nokmem.
pub const KERNEL_WIDE_KMEM_SINCE: (u32, u32) = (4, 6);

/// The leak's messages, as (what it means, the text to look for).
const SLUB_MESSAGE: &str = "SLUB: Unable to allocate memory on node -1";
/// How many matching lines are kept as evidence per pattern.
const KEEP_LINES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("failed to read the kernel release")]
    Release(#[source] FileError),
    #[error("kernel release '{value}' in '{}' is not a Linux version such as 4.4.0-131-generic", path.display())]
    BadRelease { path: PathBuf, value: String },
    #[error("failed to read the kernel command line")]
    Cmdline(#[source] FileError),
    #[error("failed to read the kernel log")]
    Log(#[source] FileError),
    #[error("'{}' is character device {major}:{minor}, not the kernel log (1:11): a container?", path.display())]
    NotKmsg {
        path: PathBuf,
        major: u32,
        minor: u32,
    },
}

/// `/dev/kmsg` is character device 1:11 (mem driver, minor 11).
const KMSG_DEV: (u32, u32) = (1, 11);

/// `major.minor` of a kernel release: `4.4.0-131-generic` -> (4, 4),
/// `3.10.0-862.el7.x86_64` -> (3, 10).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let release = release.trim();
    let mut parts = release.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor_text = parts.next()?;
    let end = minor_text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(minor_text.len());
    let minor = minor_text[..end].parse().ok()?;
    Some((major, minor))
}

/// The kernel release: `override_` when given (`--kernel-release`), else
/// `PROC/sys/kernel/osrelease`.
pub fn read_release(
    proc_root: &Path,
    override_: Option<&str>,
) -> Result<(String, (u32, u32)), KernelError> {
    let (text, path) = match override_ {
        Some(r) => (r.to_string(), PathBuf::from("--kernel-release")),
        None => {
            let path = proc_root.join(OSRELEASE);
            let text = bounded::read_to_string(&path, bounded::PROC_TEXT_MAX)
                .map_err(KernelError::Release)?;
            (text, path)
        }
    };
    let text = text.trim().to_string();
    match parse_release(&text) {
        Some(v) => Ok((text, v)),
        None => Err(KernelError::BadRelease { path, value: text }),
    }
}

/// True when the command line switches kmem accounting off: a `cgroup.memory=` parameter
/// whose comma-separated options include `nokmem`. Arguments after `--` belong to init.
pub fn cmdline_has_nokmem(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .take_while(|arg| *arg != "--")
        .filter_map(|arg| arg.strip_prefix("cgroup.memory="))
        .any(|opts| opts.split(',').any(|o| o == "nokmem"))
}

/// Read `PROC/cmdline`.
pub fn read_cmdline(proc_root: &Path) -> Result<String, KernelError> {
    let path = proc_root.join(CMDLINE);
    // /proc/cmdline ends with a newline; a recorded one may hold NULs
    bounded::read_to_string(&path, bounded::PROC_TEXT_MAX)
        .map(|s| s.replace('\0', " ").trim().to_string())
        .map_err(KernelError::Cmdline)
}

/// Which leak message a kernel log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeakMessage {
    /// `SLUB: Unable to allocate memory on node -1`
    Slub,
    /// a cgroup could not be created: `No space left on device` / `ENOSPC`
    CgroupEnospc,
}

/// Classify one kernel log message (the text after the kmsg prefix).
pub fn classify(message: &str) -> Option<LeakMessage> {
    if message.contains(SLUB_MESSAGE) {
        return Some(LeakMessage::Slub);
    }
    let lower = message.to_ascii_lowercase();
    if lower.contains("cgroup")
        && (lower.contains("no space left on device") || message.contains("ENOSPC"))
    {
        return Some(LeakMessage::CgroupEnospc);
    }
    None
}

/// The message of a `/dev/kmsg` record (`6,1234,5678,-;text`), or the line itself when it
/// is plain `dmesg` text. Continuation lines (` KEY=value`) yield None.
pub fn kmsg_message(record: &str) -> Option<&str> {
    if record.starts_with(' ') {
        return None;
    }
    let first = record.lines().next().unwrap_or("");
    match first.split_once(';') {
        Some((prefix, msg))
            if !prefix.is_empty()
                && prefix
                    .split(',')
                    .next()
                    .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit())) =>
        {
            Some(msg)
        }
        _ => Some(first),
    }
}

/// What the kernel log holds of the leak.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogFindings {
    /// Records (lines) scanned.
    pub scanned: u64,
    pub slub: u64,
    pub cgroup_enospc: u64,
    /// The first few matching messages.
    pub lines: Vec<String>,
}

impl LogFindings {
    fn add(&mut self, message: &str) {
        self.scanned += 1;
        let Some(kind) = classify(message) else {
            return;
        };
        match kind {
            LeakMessage::Slub => self.slub += 1,
            LeakMessage::CgroupEnospc => self.cgroup_enospc += 1,
        }
        if self.lines.len() < KEEP_LINES {
            self.lines.push(message.trim_end().to_string());
        }
    }

    pub fn total(&self) -> u64 {
        self.slub + self.cgroup_enospc
    }
}

/// Scan kernel log text (a recorded `/dev/kmsg` dump or `dmesg` output), line by line.
pub fn scan_text(reader: impl BufRead) -> io::Result<LogFindings> {
    let mut findings = LogFindings::default();
    for line in reader.split(b'\n') {
        let line = line?;
        let line = String::from_utf8_lossy(&line);
        if let Some(msg) = kmsg_message(&line) {
            findings.add(msg);
        }
    }
    Ok(findings)
}

/// Read the kernel log since boot from `path`: a character device (`/dev/kmsg`) is read
/// record by record without blocking until `EAGAIN`; anything else is read as text.
pub fn read_log(path: &Path) -> Result<LogFindings, KernelError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .with_path("open", path)
        .map_err(KernelError::Log)?;
    let meta = file
        .metadata()
        .with_path("stat", path)
        .map_err(KernelError::Log)?;
    if meta.file_type().is_char_device() {
        // containers link /dev/kmsg to /dev/console or /dev/null: not the kernel's log
        let (major, minor) = (
            nix::sys::stat::major(meta.rdev()) as u32,
            nix::sys::stat::minor(meta.rdev()) as u32,
        );
        if (major, minor) != KMSG_DEV {
            return Err(KernelError::NotKmsg {
                path: path.to_path_buf(),
                major,
                minor,
            });
        }
        read_kmsg_device(file).with_path("read", path)
    } else {
        scan_text(BufReader::new(file)).with_path("read", path)
    }
    .map_err(KernelError::Log)
}

fn read_kmsg_device(mut file: File) -> io::Result<LogFindings> {
    let mut findings = LogFindings::default();
    // a record is at most ~8 KiB (PRINTK_MESSAGE_MAX plus dictionary)
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let record = String::from_utf8_lossy(&buf[..n]);
                if let Some(msg) = kmsg_message(&record) {
                    findings.add(msg);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // records were overwritten while we read: the next read continues
            Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases() {
        let cases = [
            ("4.4.0-131-generic", Some((4, 4))),
            ("4.4.131", Some((4, 4))),
            ("3.10.0-862.el7.x86_64", Some((3, 10))),
            ("4.6.0", Some((4, 6))),
            ("6.18.44-fc-v657\n", Some((6, 18))),
            ("5.15", Some((5, 15))),
            ("5", None),
            ("linux", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_release(text), want, "case '{text}'");
        }
    }

    #[test]
    fn nokmem_on_the_command_line() {
        let cases = [
            ("ro quiet cgroup.memory=nokmem", true),
            ("cgroup.memory=nosocket,nokmem root=/dev/sda1", true),
            ("BOOT_IMAGE=/vmlinuz cgroup.memory=nosocket", false),
            ("cgroup_memory=nokmem", false),
            ("init=/sbin/init -- cgroup.memory=nokmem", false),
            ("cgroup.memory=nokmemx", false),
            ("", false),
        ];
        for (cmdline, want) in cases {
            assert_eq!(cmdline_has_nokmem(cmdline), want, "case '{cmdline}'");
        }
    }

    #[test]
    fn kmsg_records_and_dmesg_lines() {
        let cases = [
            ("6,1234,5678,-;hello", Some("hello")),
            (
                "4,1,2,c;SLUB: Unable to allocate memory on node -1 (gfp=0x8020)\n SUBSYSTEM=x",
                Some("SLUB: Unable to allocate memory on node -1 (gfp=0x8020)"),
            ),
            (" SUBSYSTEM=cgroup", None),
            (
                "[  12.3] plain dmesg; with a semicolon",
                Some("[  12.3] plain dmesg; with a semicolon"),
            ),
        ];
        for (record, want) in cases {
            assert_eq!(kmsg_message(record), want, "case '{record}'");
        }
    }

    #[test]
    fn leak_messages() {
        let cases = [
            (
                "SLUB: Unable to allocate memory on node -1 (gfp=0x8020)",
                Some(LeakMessage::Slub),
            ),
            (
                "cgroup: mkdir /sys/fs/cgroup/memory/kubepods/x failed: No space left on device",
                Some(LeakMessage::CgroupEnospc),
            ),
            (
                "systemd[1]: Failed to create cgroup /kubepods.slice: No space left on device",
                Some(LeakMessage::CgroupEnospc),
            ),
            ("EXT4-fs warning: No space left on device", None),
            ("eth0: link up", None),
        ];
        for (msg, want) in cases {
            assert_eq!(classify(msg), want, "case '{msg}'");
        }
    }

    #[test]
    fn scans_a_recorded_log() {
        let text = "6,1,0,-;Linux version 4.4.0\n4,2,1,-;SLUB: Unable to allocate memory on node -1 (gfp=0x8020)\n SUBSYSTEM=x\n\
                    4,3,2,-;SLUB: Unable to allocate memory on node -1 (gfp=0x8020)\n";
        let f = scan_text(text.as_bytes()).unwrap();
        assert_eq!((f.scanned, f.slub, f.cgroup_enospc), (3, 2, 0));
        assert_eq!(f.lines.len(), 2);
    }

    #[test]
    fn another_character_device_is_not_the_kernel_log() {
        // containers link /dev/kmsg to /dev/null or /dev/console
        let err = read_log(Path::new("/dev/null")).unwrap_err();
        assert!(
            matches!(
                err,
                KernelError::NotKmsg {
                    major: 1,
                    minor: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn reads_the_real_kernel_log_without_blocking() {
        // /dev/kmsg exists on this machine kind; without it the test cannot run: it fails
        // unless K8S_NOKMEM_ALLOW_SKIP=1 (a quick local loop)
        if !Path::new(KMSG).exists() {
            let msg = format!(
                "no {KMSG}; create it with `mknod -m 644 {KMSG} c 1 11` (a container without \
                 the kernel log) or run on the host"
            );
            assert!(
                std::env::var_os("K8S_NOKMEM_ALLOW_SKIP").is_some_and(|v| v == "1"),
                "{msg}\n(this test cannot run; K8S_NOKMEM_ALLOW_SKIP=1 skips it in a quick local loop)"
            );
            eprintln!("skipped: {msg}");
            return;
        }
        let f = read_log(Path::new(KMSG)).unwrap();
        assert!(f.scanned > 0, "the kernel log since boot is not empty");
    }
}
