//! Which processes are the running kubelet, from what systemd and root own, never from a
//! process's name alone (anyone can name a process `kubelet`; DESIGN "Trust boundaries"):
//! - systemd says so: the `MainPID` of the units that run the kubelet binary (`[kubelet]
//!   restart`, by default `kubelet.service`);
//! - where kubelet is not a unit (systemd not running, none of those units exists, or
//!   `verify` looks at another root or a recorded /proc), a process named kubelet counts only
//!   when root runs it (its real, effective, saved and file-system uids in `/proc/PID/status`
//!   are all 0) in the node's mount namespace (a container's kubelet runs another file
//!   system).
//!
//! Then [`Exe`]: what the process executes, compared with the payload by device/inode and
//! size before any hashing, and hashing at most the payload's size.

use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use log::debug;

use super::bounded;
use crate::fs::{FileError, WrapIo};
use crate::notes::error_chain;
use crate::paths::{self, Root};

/// init's mount namespace, under the proc root: the node's.
pub(super) const INIT_MNT_NS: &str = "1/ns/mnt";
/// A process's command name, status (uids), mount namespace and executable, under
/// `/proc/PID`.
const PID_COMM: &str = "comm";
const PID_STATUS: &str = "status";
const PID_MNT_NS: &str = "ns/mnt";
const PID_EXE: &str = "exe";
/// The name kubelet's binary gives its process; counted only for processes root runs.
const KUBELET_COMM: &str = "kubelet";
/// The `Uid:` line of `/proc/PID/status`: real, effective, saved set and file-system uid.
const STATUS_UID: &str = "Uid:";
/// Where systemd is asked: the node's own /proc (a MainPID means nothing in a recorded tree).
const HOST_PROC: &str = "/proc";

/// How a process was found to be kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    /// The `MainPID` of this unit.
    Unit(String),
    /// A process named kubelet that root runs in the node's mount namespace.
    RootProcess,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Unit(unit) => write!(f, "MainPID of '{unit}'"),
            Source::RootProcess => f.write_str("a process named kubelet that root runs"),
        }
    }
}

/// One running kubelet.
#[derive(Debug)]
pub(super) struct Proc {
    pub pid: u32,
    pub source: Source,
    /// `/proc/PID/exe` as the kernel shows it (may end in ` (deleted)`); Err: why it could
    /// not be read (no CAP_SYS_PTRACE over a root process).
    pub exe: Result<String, String>,
    pub exe_link: PathBuf,
}

/// What systemd says about the units that run kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Units {
    /// Not asked, or not reachable: why (then processes root runs count).
    NotAsked(String),
    /// None of these units exists: kubelet is not a unit here.
    NoUnit(Vec<String>),
    /// The units that exist, each with its MainPID (0: not running).
    Loaded(Vec<(String, u32)>),
}

impl Units {
    /// Ask systemd for the MainPID of `units`, when it runs the node that `verify` looks at:
    /// the root is `/`, the proc root the node's `/proc`, and systemd is running.
    pub fn ask(root: &Root, proc_root: &Path, units: &[String]) -> Units {
        if !root.is_host() {
            return Units::NotAsked(format!(
                "the node is {}, not this system's root",
                root.path().display()
            ));
        }
        if proc_root != Path::new(HOST_PROC) {
            return Units::NotAsked(format!(
                "--proc-root is '{}', not this system's /proc",
                proc_root.display()
            ));
        }
        if !Path::new(paths::SYSTEMD_RUNNING).exists() {
            return Units::NotAsked("systemd is not running".to_string());
        }
        let manager = match crate::systemd::connect() {
            Ok(m) => m,
            Err(e) => return Units::NotAsked(error_chain(&e)),
        };
        let mut loaded = Vec::new();
        for unit in units {
            match manager.state(unit) {
                Ok(s) if s.load_state == "not-found" => {}
                Ok(s) => {
                    debug!(
                        "running kubelet: '{unit}' {}/{} MainPID={}",
                        s.active_state, s.sub_state, s.main_pid
                    );
                    loaded.push((unit.clone(), s.main_pid));
                }
                Err(e) => return Units::NotAsked(error_chain(&e)),
            }
        }
        if loaded.is_empty() {
            Units::NoUnit(units.to_vec())
        } else {
            Units::Loaded(loaded)
        }
    }

    /// How the running kubelet is found, for the check's summary.
    pub fn how(&self) -> String {
        match self {
            Units::NotAsked(why) => {
                format!("only processes named kubelet that root runs count ({why})")
            }
            Units::NoUnit(units) => format!(
                "no unit {} exists, so only processes named kubelet that root runs count",
                units.join(", ")
            ),
            Units::Loaded(units) => {
                let names: Vec<&str> = units.iter().map(|(u, _)| u.as_str()).collect();
                format!("the MainPID of {}", names.join(", "))
            }
        }
    }
}

/// The running kubelets: the units' main processes, or (no unit) the processes named
/// kubelet that root runs in the node's mount namespace; under a root other than /, only
/// those running a file under that root.
pub(super) fn kubelets(proc_root: &Path, root: &Root, units: &Units) -> Vec<Proc> {
    let mut out = match units {
        Units::Loaded(units) => {
            let mut out: Vec<Proc> = Vec::new();
            for (unit, pid) in units {
                if *pid == 0 || out.iter().any(|p| p.pid == *pid) {
                    continue;
                }
                let dir = proc_root.join(pid.to_string());
                out.push(proc_at(*pid, &dir, Source::Unit(unit.clone())));
            }
            out
        }
        Units::NotAsked(_) | Units::NoUnit(_) => root_processes(proc_root, root),
    };
    out.sort_by_key(|p| p.pid);
    out
}

fn proc_at(pid: u32, dir: &Path, source: Source) -> Proc {
    let exe_link = dir.join(PID_EXE);
    let exe = fs::read_link(&exe_link)
        .map(|e| e.to_string_lossy().into_owned())
        .map_err(|e| format!("failed to read '{}': {e}", exe_link.display()));
    Proc {
        pid,
        source,
        exe,
        exe_link,
    }
}

/// Processes named kubelet that root runs in the node's mount namespace.
fn root_processes(proc_root: &Path, root: &Root) -> Vec<Proc> {
    // The node's mount namespace is init's: verify itself may run in a private one (the
    // unit's PrivateTmp/ProtectSystem), while kubelets inside containers (kind) have theirs.
    let node_ns = fs::read_link(proc_root.join(INIT_MNT_NS)).ok();
    let Ok(pids) = pids(proc_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for pid in pids {
        let dir = proc_root.join(pid.to_string());
        match bounded::read_to_string(&dir.join(PID_COMM), bounded::PROC_TEXT_MAX) {
            Ok(comm) if comm.trim_end() == KUBELET_COMM => {}
            _ => continue,
        }
        match bounded::read_to_string(&dir.join(PID_STATUS), bounded::PROC_TEXT_MAX)
            .map(|s| uids(&s))
        {
            Ok(Some(uids)) if uids.iter().all(|u| *u == 0) => {}
            Ok(uids) => {
                debug!("pid {pid} is named kubelet but runs as uids {uids:?}, not root: not the node's kubelet");
                continue;
            }
            Err(e) => {
                debug!(
                    "pid {pid} is named kubelet, its status is unreadable ({}): not counted",
                    error_chain(&e)
                );
                continue;
            }
        }
        if node_ns.is_some() && fs::read_link(dir.join(PID_MNT_NS)).ok() != node_ns {
            debug!("kubelet pid {pid}: another mount namespace, not checked");
            continue;
        }
        let p = proc_at(pid, &dir, Source::RootProcess);
        if !root.is_host() {
            match &p.exe {
                Ok(exe) if Path::new(exe).starts_with(root.path()) => {}
                _ => continue,
            }
        }
        out.push(p);
    }
    out
}

/// The processes under `proc_root` (its numeric entries), lowest pid first.
pub(super) fn pids(proc_root: &Path) -> std::io::Result<Vec<u32>> {
    let mut pids: Vec<u32> = fs::read_dir(proc_root)?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// The four uids of a `/proc/PID/status` text (real, effective, saved set, file system).
pub(super) fn uids(status: &str) -> Option<[u32; 4]> {
    let line = status.lines().find_map(|l| l.strip_prefix(STATUS_UID))?;
    let mut ids = line.split_whitespace().map(|v| v.parse::<u32>());
    let mut out = [0; 4];
    for slot in &mut out {
        *slot = ids.next()?.ok()?;
    }
    Some(out)
}

/// The payload a running executable is compared with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Payload<'a> {
    /// Device and inode of the file at the target path, and whether that file is the
    /// payload (from the payload check: it is hashed once per run).
    pub at_target: Option<((u64, u64), Option<bool>)>,
    pub size: u64,
    pub sha256: &'a str,
}

/// What a running executable is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Exe {
    Payload,
    /// Not the payload, and why (`N bytes, the payload has M`, `sha256 ...`).
    Other(String),
    /// The file at the target path, whose content the payload check could not tell.
    Unknown,
}

/// Compare the file a process executes (`/proc/PID/exe`, opened once) with the payload: the
/// same inode as the target path takes the payload check's verdict; another size is another
/// file; only a file of the payload's size is hashed, and no more than that size is read.
pub(super) fn compare(exe_link: &Path, payload: Payload<'_>) -> Result<Exe, FileError> {
    let file = File::open(exe_link).with_path("open", exe_link)?;
    let meta = file.metadata().with_path("inspect", exe_link)?;
    if let Some((id, verdict)) = payload.at_target {
        if id == (meta.dev(), meta.ino()) {
            return Ok(match verdict {
                Some(true) => Exe::Payload,
                Some(false) => Exe::Other("the file at the target path".to_string()),
                None => Exe::Unknown,
            });
        }
    }
    if meta.len() != payload.size {
        return Ok(Exe::Other(format!(
            "{} bytes, the payload has {}",
            meta.len(),
            payload.size
        )));
    }
    let sha = crate::fs::sha256_reading(file.take(payload.size), exe_link, |_| Ok(()))?;
    Ok(if sha == payload.sha256 {
        Exe::Payload
    } else {
        Exe::Other(format!("sha256 {}", crate::targets::short(&sha)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A temp dir with `proc/`, a fake /proc: init in mount namespace `mnt:[1]`, and
    /// processes as (pid, comm, uid line, namespace), each running the file `kubelet` beside
    /// it (returned).
    fn fake_proc(procs: &[(u32, &str, &str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let exe = tmp.path().join("kubelet");
        fs::write(&exe, b"x").unwrap();
        let dir = tmp.path().join("proc");
        fs::create_dir_all(dir.join("1/ns")).unwrap();
        symlink("mnt:[1]", dir.join(INIT_MNT_NS)).unwrap();
        fs::write(dir.join("1/comm"), "init\n").unwrap();
        for (pid, comm, uid, ns) in procs {
            let p = dir.join(pid.to_string());
            fs::create_dir_all(p.join("ns")).unwrap();
            fs::write(p.join(PID_COMM), format!("{comm}\n")).unwrap();
            fs::write(
                p.join(PID_STATUS),
                format!("Name:\t{comm}\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t{uid}\nGid:\t0\t0\t0\t0\n"),
            )
            .unwrap();
            symlink(ns, p.join(PID_MNT_NS)).unwrap();
            symlink(&exe, p.join(PID_EXE)).unwrap();
        }
        (tmp, exe)
    }

    #[test]
    fn uid_lines_parse() {
        let cases = [
            ("root", "Uid:\t0\t0\t0\t0\n", Some([0, 0, 0, 0])),
            (
                "nobody",
                "Name:\tx\nUid:\t65534\t65534\t65534\t65534\n",
                Some([65534; 4]),
            ),
            ("setuid", "Uid:\t1000\t0\t0\t0\n", Some([1000, 0, 0, 0])),
            ("short", "Uid:\t0\t0\n", None),
            ("garbled", "Uid:\t0\tx\t0\t0\n", None),
            ("none", "Name:\tx\n", None),
        ];
        for (case, text, want) in cases {
            assert_eq!(uids(text), want, "case {case}");
        }
    }

    /// Where kubelet is no unit, a name is not enough: only root's processes in the node's
    /// mount namespace count.
    #[test]
    fn without_a_unit_only_processes_root_runs_count() {
        let (dir, _) = fake_proc(&[
            (10, "kubelet", "0\t0\t0\t0", "mnt:[1]"),
            (11, "kubelet", "65534\t65534\t65534\t65534", "mnt:[1]"),
            (12, "kubelet", "1000\t0\t0\t0", "mnt:[1]"),
            (13, "kubelet", "0\t0\t0\t0", "mnt:[2]"),
            (14, "sleep", "0\t0\t0\t0", "mnt:[1]"),
        ]);
        let proc_root = dir.path().join("proc");
        let host = Root::new("/");
        for units in [
            Units::NotAsked("systemd is not running".into()),
            Units::NoUnit(vec!["kubelet.service".into()]),
        ] {
            let found = kubelets(&proc_root, &host, &units);
            let pids: Vec<(u32, &Source)> = found.iter().map(|p| (p.pid, &p.source)).collect();
            assert_eq!(pids, [(10, &Source::RootProcess)], "{units:?}");
        }
    }

    /// A unit's MainPID is kubelet whatever its name, and nothing else is.
    #[test]
    fn a_unit_names_its_main_process_and_nothing_else() {
        let (dir, bin) = fake_proc(&[
            (10, "kubelet", "0\t0\t0\t0", "mnt:[1]"),
            (20, "hyperkube", "0\t0\t0\t0", "mnt:[1]"),
        ]);
        let proc_root = dir.path().join("proc");
        let host = Root::new("/");
        let units = Units::Loaded(vec![("kubelet.service".into(), 20)]);
        let found = kubelets(&proc_root, &host, &units);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].pid, &found[0].source),
            (20, &Source::Unit("kubelet.service".into()))
        );
        assert_eq!(found[0].exe.as_deref(), Ok(bin.to_str().unwrap()));
        let stopped = Units::Loaded(vec![("kubelet.service".into(), 0)]);
        assert!(kubelets(&proc_root, &host, &stopped).is_empty());
    }

    /// The size tells another file apart before any hashing; only the payload's size is read.
    #[test]
    fn compare_uses_inode_and_size_before_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let payload = b"payload bytes";
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(payload));
        let same = dir.path().join("same");
        fs::write(&same, payload).unwrap();
        let other = dir.path().join("other");
        fs::write(&other, b"payload bytez").unwrap();
        let big = dir.path().join("big");
        File::create(&big).unwrap().set_len(1 << 40).unwrap();
        let p = Payload {
            at_target: None,
            size: payload.len() as u64,
            sha256: &sha,
        };
        assert_eq!(compare(&same, p).unwrap(), Exe::Payload);
        assert!(matches!(compare(&other, p).unwrap(), Exe::Other(s) if s.starts_with("sha256 ")));
        let (got, read) = super::super::bounded::bytes_read_during(|| compare(&big, p).unwrap());
        assert_eq!(
            got,
            Exe::Other(format!("{} bytes, the payload has 13", 1u64 << 40))
        );
        assert_eq!(read, 0, "the 1 TiB file was read");
        // ...while a file of the payload's size is hashed: read once
        let (_, read) = super::super::bounded::bytes_read_during(|| compare(&other, p).unwrap());
        assert_eq!(read, payload.len() as u64);
        // the same inode as the target path: the payload check's verdict, no hashing
        let meta = fs::metadata(&other).unwrap();
        let at_target = Some(((meta.dev(), meta.ino()), Some(true)));
        assert_eq!(
            compare(&other, Payload { at_target, ..p }).unwrap(),
            Exe::Payload
        );
    }
}
