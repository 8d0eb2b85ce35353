//! Unit tests of the cgroup probes, over fake cgroup trees in temp directories.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::kmem::{slab_entries, MEMORY_KMEM_SLABINFO, MEMORY_KMEM_USAGE};
use super::mountinfo::{layout, parse_mountinfo};
use super::names::{container_id, pod_uid};
use super::proc::parse_proc_cgroups;
use super::*;

fn set_fixture(dir: &Path, name: &str, contents: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), contents).unwrap();
}

fn cg(dir: &Path, usage: u64, slabinfo: &str) {
    set_fixture(dir, MEMORY_KMEM_USAGE, &format!("{usage}\n"));
    set_fixture(dir, MEMORY_KMEM_SLABINFO, slabinfo);
}

const HEADER: &str = "slabinfo - version: 2.1\n# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n";

#[test]
fn mountinfo_lines() {
    let text =
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:5 - cgroup cgroup rw,memory\n\
                41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                50 31 0:40 /sub /mnt/with\\040space rw - tmpfs tmpfs rw\n";
    let m = parse_mountinfo(text).unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
    assert_eq!(m[0].super_options, vec!["rw", "memory"]);
    assert_eq!(m[2].mount_point, PathBuf::from("/mnt/with space"));
    assert_eq!(m[2].root, "/sub");
    assert_eq!(parse_mountinfo("garbage\n").unwrap_err().0, 1);
    assert_eq!(parse_mountinfo("1 2 3 - x\n").unwrap_err().0, 1);
}

#[test]
fn layouts() {
    let v1 = "1 0 0:1 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
              2 0 0:2 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n";
    let hybrid = format!("{v1}3 0 0:3 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
    let unified = "3 0 0:3 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
                   2 0 0:2 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
    let rhel6 = "1 0 0:1 / /cgroup/memory rw - cgroup cgroup rw,memory\n";
    let cases: [(&str, &str, Setup, Option<&str>); 5] = [
        ("legacy", v1, Setup::Legacy, Some("/x/memory")),
        ("hybrid", &hybrid, Setup::Hybrid, Some("/x/memory")),
        ("unified", unified, Setup::Unified, None),
        ("none", "", Setup::None, None),
        ("elsewhere", rhel6, Setup::Legacy, Some("/cgroup/memory")),
    ];
    for (name, text, setup, memory) in cases {
        let l = layout(&parse_mountinfo(text).unwrap(), Path::new("/x"));
        assert_eq!(l.setup, setup, "case {name}");
        assert_eq!(
            l.memory.map(|m| m.path),
            memory.map(PathBuf::from),
            "case {name}"
        );
    }
    let l = layout(&parse_mountinfo(unified).unwrap(), Path::new("/x"));
    assert_eq!(l.unified.unwrap().path, PathBuf::from("/x"));
}

#[test]
fn proc_cgroups() {
    let good = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\nmemory\t4\t49\t1\n";
    assert_eq!(parse_proc_cgroups(good), Ok(49));
    assert_eq!(
        parse_proc_cgroups("#h\nmemory\t4\tmany\t1\n"),
        Err((2, "memory\t4\tmany\t1".into()))
    );
    assert_eq!(parse_proc_cgroups("#h\ncpu 1 1 1\n").unwrap_err().0, 0);
    assert_eq!(parse_proc_cgroups("\u{1}\u{2}garbage").unwrap_err().0, 1);
}

#[test]
fn names() {
    let pods = [
        (
            "pod0d5c3c1a-6ec5-4e8c-9b9e-2f0b1e2f3a4b",
            Some("0d5c3c1a-6ec5-4e8c-9b9e-2f0b1e2f3a4b"),
        ),
        (
            "kubepods-burstable-pod0d5c3c1a_6ec5_4e8c.slice",
            Some("0d5c3c1a-6ec5-4e8c"),
        ),
        ("kubepods-pod12_34.slice", Some("12-34")),
        ("kubepods-burstable.slice", None),
        ("pod", None),
        ("system.slice", None),
    ];
    for (name, want) in pods {
        assert_eq!(pod_uid(name).as_deref(), want, "case {name}");
    }
    let containers = [
        ("docker-abc123.scope", "abc123"),
        ("cri-containerd-abc123.scope", "abc123"),
        ("crio-abc123.scope", "abc123"),
        ("abc123", "abc123"),
    ];
    for (name, want) in containers {
        assert_eq!(container_id(name), want, "case {name}");
    }
}

#[test]
fn slabinfo_entries() {
    assert_eq!(slab_entries(HEADER.as_bytes()), 0);
    assert_eq!(slab_entries(b""), 0);
    let with = format!("{HEADER}kmalloc-64  128 128 64 64 1 : tunables 0 0 0 : slabdata 2 2 0\ndentry 42 42 192 21 1 : tunables 0 0 0 : slabdata 2 2 0\n");
    assert_eq!(slab_entries(with.as_bytes()), 2);
}

#[test]
fn walks_both_drivers_and_docker() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    cg(&m.join("kubepods"), 5000, HEADER);
    cg(&m.join("kubepods/burstable"), 0, HEADER);
    cg(&m.join("kubepods/burstable/podaaaa"), 0, HEADER);
    cg(&m.join("kubepods/burstable/podaaaa/c1"), 0, HEADER);
    cg(
        &m.join("kubepods/podbbbb/c2"),
        0,
        &format!("{HEADER}dentry 1 1 1 1 1\n"),
    );
    cg(&m.join("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podcc_dd.slice/docker-c3.scope"), 7, HEADER);
    cg(&m.join("docker/c4"), 0, HEADER);
    cg(&m.join("system.slice/docker-c5.scope"), 0, HEADER);
    cg(&m.join("system.slice/ssh.service"), 99, HEADER);
    let w = walk(
        m,
        WalkOptions {
            read_kmem: true,
            slabinfo: true,
        },
    )
    .unwrap();
    let find = |p: &str| {
        w.cgroups
            .iter()
            .find(|c| c.path == p)
            .unwrap_or_else(|| panic!("{p} missing"))
    };
    assert_eq!(w.dirs, 16);
    assert_eq!(find("/kubepods").kind, Kind::Kubepods);
    assert_eq!(
        find("/kubepods/burstable/podaaaa/c1").kind,
        Kind::Container {
            pod_uid: "aaaa".into(),
            container_id: "c1".into(),
            qos: Qos::Burstable
        }
    );
    let c2 = find("/kubepods/podbbbb/c2");
    assert_eq!(
        c2.kmem,
        Kmem::Active {
            usage: 0,
            slab_entries: 1
        },
        "slab entries with usage 0"
    );
    assert_eq!(c2.kind.pod_uid(), Some("bbbb"));
    assert_eq!(c2.inherited_from.as_deref(), Some("/kubepods"));
    let c3 = find("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podcc_dd.slice/docker-c3.scope");
    assert_eq!(c3.kind.pod_uid(), Some("cc-dd"));
    assert_eq!(c3.kind.container_id(), Some("c3"));
    assert_eq!(c3.inherited_from, None);
    assert_eq!(
        find("/docker/c4").kind,
        Kind::Docker {
            container_id: "c4".into()
        }
    );
    assert_eq!(
        find("/system.slice/docker-c5.scope").kind.container_id(),
        Some("c5")
    );
    assert!(
        !w.cgroups.iter().any(|c| c.path.contains("ssh")),
        "not a pod"
    );
    assert_eq!(w.active().count(), 3);
    assert!(pods_present(m));
}

/// Directory names are bytes: a container cgroup whose name is not UTF-8 is read and
/// shown lossily, not skipped (a leaking cgroup must never hide behind its name).
#[test]
fn a_cgroup_whose_name_is_not_utf8_is_read() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    cg(&m.join("kubepods/podaaaa"), 0, HEADER);
    let odd = std::ffi::OsStr::from_bytes(b"c\xff\xfe1");
    cg(&m.join("kubepods/podaaaa").join(odd), 4096, HEADER);
    cg(
        &m.join("kubepods/podaaaa").join(odd).join("child"),
        0,
        HEADER,
    );
    let w = walk(
        m,
        WalkOptions {
            read_kmem: true,
            slabinfo: true,
        },
    )
    .unwrap();
    assert_eq!(w.dirs, 5, "every directory counted");
    let c = w
        .cgroups
        .iter()
        .find(|c| c.path == "/kubepods/podaaaa/c\u{fffd}\u{fffd}1")
        .unwrap_or_else(|| panic!("not found in {:?}", w.cgroups));
    assert_eq!(
        c.kmem,
        Kmem::Active {
            usage: 4096,
            slab_entries: 0
        }
    );
    assert_eq!(c.kind.container_id(), Some("c\u{fffd}\u{fffd}1"));
    assert_eq!(w.unreadable, 0);
}

#[test]
fn eio_means_off_and_other_errors_are_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    set_fixture(&m.join("kubepods/poda/c1"), MEMORY_KMEM_USAGE, "0\n");
    // reading address 0 of one's own memory is a real EIO, like 3.10's slabinfo
    symlink(
        "/proc/self/mem",
        m.join("kubepods/poda/c1").join(MEMORY_KMEM_SLABINFO),
    )
    .unwrap();
    fs::create_dir_all(m.join("kubepods/poda/c2").join(MEMORY_KMEM_USAGE)).unwrap();
    set_fixture(&m.join("kubepods/poda/c3"), MEMORY_KMEM_USAGE, "lots\n");
    let w = walk(
        m,
        WalkOptions {
            read_kmem: true,
            slabinfo: true,
        },
    )
    .unwrap();
    let by = |p: &str| w.cgroups.iter().find(|c| c.path == p).unwrap().kmem.clone();
    assert_eq!(by("/kubepods/poda/c1"), Kmem::Off);
    assert!(
        matches!(by("/kubepods/poda/c2"), Kmem::Unreadable(e) if e.contains("memory.kmem.usage_in_bytes"))
    );
    assert!(matches!(by("/kubepods/poda/c3"), Kmem::Unreadable(e) if e.contains("'lots'")));
    assert_eq!(w.unreadable, 2);
    assert_eq!(by("/kubepods/poda"), Kmem::Absent);
}

#[test]
fn a_missing_hierarchy_is_an_error() {
    let err = walk(
        Path::new("/nonexistent/memory"),
        WalkOptions {
            read_kmem: true,
            slabinfo: false,
        },
    )
    .unwrap_err();
    assert!(err.source_string().contains("/nonexistent/memory"), "{err}");
}

trait SourceString {
    fn source_string(&self) -> String;
}
impl SourceString for CgroupError {
    fn source_string(&self) -> String {
        let mut s = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(e) = src {
            s.push_str(&format!(": {e}"));
            src = e.source();
        }
        s
    }
}
