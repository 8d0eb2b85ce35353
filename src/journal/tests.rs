//! Tests of the journal: failpoints, step labels, undo of cut-short steps, the file.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::step::utc_stamp;
use super::*;
use crate::paths::{self, Root};
use crate::policy::SkipReason;
use crate::state::Original;

#[test]
fn failpoint_specs() {
    let cases = [
        ("3", Some((FailAt::Index(3), FailMode::Error))),
        ("3:abort", Some((FailAt::Index(3), FailMode::Abort))),
        (
            "divert:error",
            Some((FailAt::Name("divert".into()), FailMode::Error)),
        ),
        ("place:panic", None),
        ("0", None),
        (":abort", None),
        ("3:maybe", None),
    ];
    for (spec, want) in cases {
        let got = Failpoint::parse(spec).map(|f| (f.at, f.mode));
        assert_eq!(got, want, "case '{spec}'");
    }
}

#[test]
fn failpoint_finds_its_step() {
    let steps = vec![
        Step::Preflight,
        Step::Stop {
            unit: "a.service".into(),
        },
        Step::Record {
            state: None,
            before: None,
            stamp: Vec::new(),
        },
    ];
    let at = |s: &str| Failpoint::parse(s).unwrap().index_in(&steps);
    assert_eq!(at("1"), Some(0));
    assert_eq!(at("3"), Some(2));
    assert_eq!(at("4"), None);
    assert_eq!(at("stop"), Some(1));
    assert_eq!(at("divert"), None);
}

/// A root with dpkg's admin dir and `/usr/bin/kubelet` = `bytes`.
fn node_root(bytes: &[u8]) -> (tempfile::TempDir, Root) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    fs::create_dir_all(root.join("/var/lib/dpkg")).unwrap();
    fs::write(root.join("/var/lib/dpkg/status"), b"").unwrap();
    fs::create_dir_all(root.join("/usr/bin")).unwrap();
    fs::write(root.join("/usr/bin/kubelet"), bytes).unwrap();
    (dir, root)
}

fn skip_services() -> Services<'static> {
    Services::Skip(SkipReason::SystemdNotRunning)
}

/// `dpkg-divert --add` without `--rename`: the database says diverted, the file did
/// not move (dpkg-divert cut short between its two writes).
fn divert_db_only(root: &Root) {
    let out = std::process::Command::new("dpkg-divert")
        .arg("--root")
        .arg(root.path())
        .args(["--package", "k8s-nokmem", "--add", "--divert"])
        .args(["/usr/bin/kubelet.distrib", "/usr/bin/kubelet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn original(bytes: &[u8]) -> Original {
    Original::File {
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)),
        size: bytes.len() as u64,
        mode: 0o644,
    }
}

fn kubelet_steps(orig: &Original) -> (Step, Step) {
    let (path, divert_to) = (
        PathBuf::from("/usr/bin/kubelet"),
        PathBuf::from("/usr/bin/kubelet.distrib"),
    );
    (
        Step::Divert {
            target: "kubelet".into(),
            path: path.clone(),
            divert_to: divert_to.clone(),
            original: orig.clone(),
        },
        Step::Place {
            target: "kubelet".into(),
            path,
            divert_to,
            payload: "/usr/lib/k8s-nokmem/kubelet".into(),
            sha256: "f".repeat(64),
            original: orig.clone(),
            previous: None,
        },
    )
}

#[test]
fn undo_after_a_rename_without_database_write_moves_the_original_back() {
    let (_dir, root) = node_root(b"orig");
    fs::rename(
        root.join("/usr/bin/kubelet"),
        root.join("/usr/bin/kubelet.distrib"),
    )
    .unwrap();
    let node = Executor::new(&root, skip_services(), Duration::from_secs(1));
    let (divert, place) = kubelet_steps(&original(b"orig"));
    assert_eq!(
        node.undo(&place).unwrap(),
        Did::OkBecause("nothing placed".into())
    );
    assert_eq!(
        node.undo(&divert).unwrap(),
        Did::OkBecause("moved the original back".into())
    );
    assert_eq!(fs::read(root.join("/usr/bin/kubelet")).unwrap(), b"orig");
}

#[test]
fn undo_after_a_database_write_without_rename_keeps_the_original() {
    let (_dir, root) = node_root(b"orig");
    divert_db_only(&root);
    let node = Executor::new(&root, skip_services(), Duration::from_secs(1));
    let (divert, place) = kubelet_steps(&original(b"orig"));
    assert_eq!(
        node.undo(&place).unwrap(),
        Did::OkBecause("the original is still there".into())
    );
    node.undo(&divert).unwrap();
    assert_eq!(fs::read(root.join("/usr/bin/kubelet")).unwrap(), b"orig");
    assert!(crate::divert::DpkgDivert::new(&root)
        .list()
        .unwrap()
        .is_empty());
}

#[test]
fn undivert_after_a_rename_back_without_database_write_finishes() {
    let (_dir, root) = node_root(b"orig");
    divert_db_only(&root);
    let node = Executor::new(&root, skip_services(), Duration::from_secs(1));
    let undivert = Step::Undivert {
        target: "kubelet".into(),
        path: "/usr/bin/kubelet".into(),
        divert_to: "/usr/bin/kubelet.distrib".into(),
        original: Some(original(b"orig")),
    };
    assert_eq!(
        node.apply(&undivert).unwrap(),
        Did::OkBecause("original back".into())
    );
    assert!(crate::divert::DpkgDivert::new(&root)
        .list()
        .unwrap()
        .is_empty());
    assert_eq!(fs::read(root.join("/usr/bin/kubelet")).unwrap(), b"orig");
}

#[test]
fn undoing_a_divert_of_a_path_diverted_before_keeps_the_diversion() {
    let (_dir, root) = node_root(b"orig");
    let node = Executor::new(&root, skip_services(), Duration::from_secs(1));
    let (divert, _) = kubelet_steps(&original(b"orig"));
    node.apply(&divert).unwrap();
    fs::write(root.join("/usr/bin/kubelet"), b"previous payload").unwrap();
    assert_eq!(
        node.undo(&divert).unwrap(),
        Did::OkBecause("diverted before this transaction: kept".into())
    );
    assert_eq!(
        crate::divert::DpkgDivert::new(&root).list().unwrap().len(),
        1
    );
    assert_eq!(
        fs::read(root.join("/usr/bin/kubelet")).unwrap(),
        b"previous payload"
    );
    assert_eq!(
        fs::read(root.join("/usr/bin/kubelet.distrib")).unwrap(),
        b"orig"
    );
}

#[test]
fn utc_stamps() {
    for (secs, want) in [
        (0, "19700101T000000Z"),
        (951_782_400, "20000229T000000Z"),
        (1_796_164_261, "20261201T223101Z"),
    ] {
        assert_eq!(utc_stamp(secs), want, "case {secs}");
    }
    assert_eq!(
        foreign_aside(Path::new("/usr/bin/kubelet"), 0),
        PathBuf::from("/usr/bin/kubelet.k8s-nokmem-foreign-19700101T000000Z")
    );
}

#[test]
fn a_foreign_file_move_cut_short_is_finished() {
    let (_dir, root) = node_root(b"hotfix");
    divert_db_only(&root);
    let to = PathBuf::from("/usr/bin/kubelet.k8s-nokmem-foreign-x");
    // killed between the link and the unlink
    fs::hard_link(root.join("/usr/bin/kubelet"), root.join(&to)).unwrap();
    let node = Executor::new(&root, skip_services(), Duration::from_secs(1));
    let unplace = Step::Unplace {
        target: "kubelet".into(),
        path: "/usr/bin/kubelet".into(),
        divert_to: "/usr/bin/kubelet.distrib".into(),
        ours: vec![],
        payload: None,
        foreign_to: Some(to.clone()),
    };
    node.apply(&unplace).unwrap();
    assert!(!root.join("/usr/bin/kubelet").exists());
    assert_eq!(fs::read(root.join(&to)).unwrap(), b"hotfix");
    // a name that holds another file is never replaced
    fs::write(root.join("/usr/bin/kubelet"), b"another").unwrap();
    fs::write(root.join(&to), b"taken").unwrap();
    let err = node.apply(&unplace).unwrap_err();
    assert!(format!("{err:#}").contains("without replacing"), "{err:#}");
    assert_eq!(fs::read(root.join(&to)).unwrap(), b"taken");
    // undo puts the moved file back
    fs::remove_file(root.join("/usr/bin/kubelet")).unwrap();
    node.undo(&unplace).unwrap();
    assert_eq!(fs::read(root.join("/usr/bin/kubelet")).unwrap(), b"taken");
}

#[test]
fn journal_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    fs::create_dir_all(root.join(paths::STATE_DIR)).unwrap();
    let mut j = Journal::new(
        Transaction::Install,
        vec![
            Step::Preflight,
            Step::Divert {
                target: "runc".into(),
                path: "/usr/bin/runc".into(),
                divert_to: "/usr/bin/runc.distrib".into(),
                original: Original::Symlink {
                    target: "runc-1".into(),
                },
            },
        ],
    );
    j.begun = 2;
    j.save(&root).unwrap();
    assert_eq!(Journal::load(&root).unwrap(), Some(j.clone()));
    j.finish(&root, Phase::Done).unwrap();
    assert_eq!(Journal::load(&root).unwrap(), None);
    assert_eq!(
        Journal::load_last(&root).unwrap().unwrap().phase,
        Phase::Done
    );
}
