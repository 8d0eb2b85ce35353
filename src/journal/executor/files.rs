//! The file and diversion operations of [`Executor`]: stage, place (with the previous
//! payload kept aside on an upgrade), unplace, divert and undivert, and their undos. Every
//! one checks the node first, so that running it twice, or after it was cut short, is
//! harmless.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use log::{debug, warn};

use super::{Did, Executor};
use crate::divert::Removed;
use crate::journal::{foreign_aside, now};
use crate::notes::with_note;
use crate::state::{Original, State};
use crate::targets;

impl Executor<'_> {
    pub(in crate::journal) fn exists(&self, abs: &Path) -> bool {
        fs::symlink_metadata(self.root.join(abs)).is_ok()
    }

    pub(in crate::journal) fn place(
        &self,
        path: &Path,
        divert_to: &Path,
        payload: &Path,
        sha256: &str,
        keep_previous: bool,
    ) -> anyhow::Result<Did> {
        let shown = self.root.describe(path);
        if !self.diversions.held(path, divert_to)? {
            bail!("refusing to write {shown}: it is not diverted by k8s-nokmem");
        }
        let dst = self.root.join(path);
        let tmp = self.temp_of(path);
        let staged = self.staged.borrow().contains(&tmp) && tmp.exists();
        if !staged {
            if fs::symlink_metadata(&dst).is_ok_and(|m| m.is_file())
                && crate::fs::sha256_file(&dst)? == sha256
            {
                return Ok(Did::OkBecause("already in place".into()));
            }
            self.stage(path, payload, sha256)?;
        }
        let kept = keep_previous && self.keep_aside(path)?;
        crate::fs::rename(&tmp, &dst)
            .with_context(|| format!("failed to put the payload at {shown}"))?;
        self.staged.borrow_mut().retain(|t| *t != tmp);
        debug!("placed '{}' -> '{}'", tmp.display(), dst.display());
        Ok(if kept {
            Did::OkBecause("the previous payload kept aside".into())
        } else {
            Did::Ok
        })
    }

    /// Where an upgrade keeps the previous payload of `path` until it commits.
    pub(in crate::journal) fn aside_of(&self, path: &Path) -> PathBuf {
        let dst = self.root.join(path);
        let name = dst
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        dst.with_file_name(format!(".{name}.k8s-nokmem-prev"))
    }

    /// Hard-link what is at `path` to its aside name (a rename if the file system cannot
    /// link), replacing an older aside; directory fsynced. False when `path` is empty.
    pub(in crate::journal) fn keep_aside(&self, path: &Path) -> anyhow::Result<bool> {
        let (dst, aside) = (self.root.join(path), self.aside_of(path));
        if !self.exists(path) {
            return Ok(false);
        }
        crate::fs::remove_file_if_exists(&aside)?;
        if let Err(e) = fs::hard_link(&dst, &aside) {
            debug!(
                "cannot link '{}' to '{}' ({e}): renaming it",
                dst.display(),
                aside.display()
            );
            crate::fs::rename(&dst, &aside).context("failed to keep the previous payload")?;
        } else if let Some(dir) = aside.parent() {
            // the link is a new name in the directory (a rename fsyncs it itself)
            crate::fs::sync_dir(dir)?;
        }
        debug!("kept '{}' as '{}'", dst.display(), aside.display());
        Ok(true)
    }

    /// Put the previous payload kept aside back at `path` (replacing what is there, in one
    /// rename). None when there is nothing aside.
    pub(in crate::journal) fn restore_aside(
        &self,
        path: &Path,
        previous: &Original,
    ) -> anyhow::Result<Option<Did>> {
        use std::os::unix::fs::MetadataExt;
        let (dst, aside) = (self.root.join(path), self.aside_of(path));
        let Ok(kept) = fs::symlink_metadata(&aside) else {
            return Ok(None);
        };
        let now = Original::probe("previous", &aside)?;
        if !previous.same_as(&now) {
            warn!(
                "'{}' is {}, not the previous payload ({}): left alone",
                aside.display(),
                now.describe(),
                previous.describe()
            );
            return Ok(None);
        }
        // a rename between two links of one file does nothing: then drop the extra link
        let same = fs::symlink_metadata(&dst)
            .is_ok_and(|m| m.dev() == kept.dev() && m.ino() == kept.ino());
        if same {
            remove_then_sync_dir(&aside)?;
        } else {
            // fsyncs the directory itself
            crate::fs::rename(&aside, &dst).with_context(|| {
                format!(
                    "failed to put the previous payload back at {}",
                    self.root.describe(path)
                )
            })?;
        }
        Ok(Some(Did::OkBecause("the previous payload is back".into())))
    }

    /// Copy the payload to `path`'s temp file, hashing while copying; a mismatch with the
    /// MANIFEST removes the copy and fails.
    pub(in crate::journal) fn stage(
        &self,
        path: &Path,
        payload: &Path,
        sha256: &str,
    ) -> anyhow::Result<()> {
        let (src, tmp) = (self.root.join(payload), self.temp_of(path));
        let got = targets::copy_hashed(&src, &tmp, targets::PAYLOAD_MODE).with_context(|| {
            format!(
                "failed to stage the payload next to {}",
                self.root.describe(path)
            )
        })?;
        if got != sha256 {
            crate::fs::remove_file_if_exists(&tmp)?;
            bail!(
                "the copy of {} has sha256 {}, the MANIFEST says {}",
                self.root.describe(payload),
                targets::short(&got),
                targets::short(sha256)
            );
        }
        self.staged.borrow_mut().push(tmp);
        Ok(())
    }

    /// The staged copy of the payload next to `path`: a fixed name, so that an undo after
    /// a crash finds it; `targets::copy_hashed` creates it afresh, never through a link.
    pub(in crate::journal) fn temp_of(&self, path: &Path) -> PathBuf {
        let dst = self.root.join(path);
        let name = dst
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        dst.with_file_name(format!(".{name}.k8s-nokmem-new"))
    }

    pub(in crate::journal) fn remove_ours(&self, path: &Path) -> anyhow::Result<()> {
        remove_then_sync_dir(&self.root.join(path))
    }

    pub(in crate::journal) fn undo_place(
        &self,
        path: &Path,
        divert_to: &Path,
        sha256: &str,
        original: &Original,
        previous: Option<&Original>,
    ) -> anyhow::Result<Did> {
        crate::fs::remove_file_if_exists(&self.temp_of(path))?;
        if let Some(previous) = previous {
            if let Some(did) = self.restore_aside(path, previous)? {
                return Ok(did);
            }
        }
        if !self.diversions.held(path, divert_to)? || !self.exists(path) {
            return Ok(Did::OkBecause("nothing placed".into()));
        }
        // The rename into place is atomic: anything but the payload was not placed by this
        // step (the original not yet renamed away, or an upgrade's previous payload).
        let now = Original::probe("target", &self.root.join(path))?;
        let is_payload = matches!(&now, Original::File { sha256: s, .. } if s == sha256);
        if !is_payload {
            let aside = self.exists(divert_to) || *original == Original::Missing;
            return Ok(Did::OkBecause(
                if !aside && original.same_as(&now) {
                    "the original is still there"
                } else {
                    "not placed: kept"
                }
                .into(),
            ));
        }
        self.remove_ours(path)?;
        Ok(Did::OkBecause("removed ours".into()))
    }

    pub(in crate::journal) fn undo_divert(
        &self,
        path: &Path,
        divert_to: &Path,
        original: &Original,
    ) -> anyhow::Result<Did> {
        let shown = self.root.describe(path);
        if self.diversions.held(path, divert_to)? {
            // A diversion this step added left nothing at `path` (dpkg-divert renamed the
            // original away and place's undo, which runs first, removed the payload). A file
            // there with the original aside means the diversion predates the transaction:
            // an older helper journalled a divert step for an upgrade. That divert added
            // nothing, so its undo removes nothing.
            if self.exists(path) && self.exists(divert_to) {
                return Ok(Did::OkBecause(
                    "diverted before this transaction: kept".into(),
                ));
            }
            self.diversions
                .remove(path, divert_to)
                .with_context(|| format!("failed to remove the diversion of {shown}"))?;
            return Ok(Did::Ok);
        }
        // Not (or no longer) diverted: if dpkg-divert was cut short between its rename and
        // its database write, the original sits at `.distrib` with nothing at `path`.
        if *original != Original::Missing && !self.exists(path) && self.exists(divert_to) {
            let (from, to) = (self.root.join(divert_to), self.root.join(path));
            crate::fs::rename(&from, &to)
                .with_context(|| format!("failed to move '{}' back", from.display()))?;
            return Ok(Did::OkBecause("moved the original back".into()));
        }
        Ok(Did::OkBecause("not diverted".into()))
    }

    pub(in crate::journal) fn unplace(
        &self,
        path: &Path,
        divert_to: &Path,
        ours: &[String],
        foreign_to: Option<&Path>,
    ) -> anyhow::Result<Did> {
        crate::fs::remove_file_if_exists(&self.temp_of(path))?;
        crate::fs::remove_file_if_exists(&self.aside_of(path))?;
        if !self.diversions.held(path, divert_to)? {
            return Ok(Did::OkBecause("not diverted".into()));
        }
        match Original::probe("target", &self.root.join(path))? {
            Original::Missing => Ok(Did::OkBecause("nothing there".into())),
            Original::File { sha256, .. } if ours.contains(&sha256) => {
                self.remove_ours(path)?;
                Ok(Did::Ok)
            }
            other => {
                // someone else's file (a hand-copied hotfix): keeping it there would keep
                // the diversion, and every later runc/kubelet upgrade would land aside
                let to = foreign_to
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| foreign_aside(path, now()));
                self.move_no_clobber(path, &to).map_err(|e| {
                    with_note(
                        e,
                        format!(
                            "move {} away by hand and run `k8s-nokmem remove` again",
                            self.root.describe(path)
                        ),
                    )
                })?;
                warn!(
                    "{} was {}, not a payload k8s-nokmem placed: moved it to {} so that the original can come back",
                    self.root.describe(path),
                    other.describe(),
                    self.root.describe(&to)
                );
                Ok(Did::OkBecause(format!(
                    "not ours: moved to '{}'",
                    to.display()
                )))
            }
        }
    }

    /// Rename `from` to `to` (in-system paths, one directory) without replacing anything at
    /// `to`: a hard link, then the unlink of `from`, then a directory fsync. Finishes a move
    /// that was cut short between the two (both names on one file).
    pub(in crate::journal) fn move_no_clobber(&self, from: &Path, to: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let (src, dst) = (self.root.join(from), self.root.join(to));
        if let Err(e) = fs::hard_link(&src, &dst) {
            let same = match (fs::symlink_metadata(&src), fs::symlink_metadata(&dst)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                return Err(anyhow::Error::new(e).context(format!(
                    "failed to move {} to {} (without replacing anything there)",
                    self.root.describe(from),
                    self.root.describe(to)
                )));
            }
        }
        remove_then_sync_dir(&src)
    }

    pub(in crate::journal) fn undivert(
        &self,
        path: &Path,
        divert_to: &Path,
        original: Option<&Original>,
    ) -> anyhow::Result<Did> {
        let shown = self.root.describe(path);
        if self.diversions.held(path, divert_to)? {
            // both present: the path holds someone else's file and the original is aside.
            // (Path present, nothing aside: the original was renamed back by a cut-short
            // dpkg-divert, or there never was one; removing the diversion is then right.)
            // (unplace moved anything there aside: this is someone writing meanwhile)
            if self.exists(path) && self.exists(divert_to) {
                return Err(with_note(
                    anyhow!(
                        "cannot remove the diversion of {shown}: the path holds a file that is not k8s-nokmem's, and the original is at {}",
                        self.root.describe(divert_to)
                    ),
                    format!(
                        "move {shown} away and run `k8s-nokmem remove` again"
                    ),
                ));
            }
            match self
                .diversions
                .remove(path, divert_to)
                .with_context(|| format!("failed to remove the diversion of {shown}"))?
            {
                Removed::Removed | Removed::NotThere => {}
            }
        } else if original.is_some_and(|o| *o != Original::Missing)
            && !self.exists(path)
            && self.exists(divert_to)
        {
            let (from, to) = (self.root.join(divert_to), self.root.join(path));
            crate::fs::rename(&from, &to)
                .with_context(|| format!("failed to move '{}' back", from.display()))?;
        }
        let Some(original) = original else {
            return Ok(Did::OkBecause("original not recorded: not checked".into()));
        };
        let now = Original::probe("target", &self.root.join(path))?;
        if original.same_as(&now) {
            Ok(Did::OkBecause("original back".into()))
        } else {
            warn!(
                "{shown} is now {}, not {} as recorded at install: a package upgrade while it \
                 was diverted replaces it; check with `dpkg -S {}`",
                now.describe(),
                original.describe(),
                path.display()
            );
            Ok(Did::OkBecause(
                "original differs from the recorded one".into(),
            ))
        }
    }

    /// The current state minus the targets we no longer divert.
    pub(in crate::journal) fn state_without_undiverted(&self) -> anyhow::Result<State> {
        let mut state = State::load(&self.root).unwrap_or_else(|e| {
            warn!("{}: rewriting it", crate::notes::error_chain(&e));
            State::default()
        });
        let ours: Vec<_> = self
            .diversions()?
            .into_iter()
            .filter(|d| d.is_ours())
            .collect();
        state
            .targets
            .retain(|_, t| ours.iter().any(|d| d.path == t.path));
        Ok(state)
    }
}

/// Remove `file` if it exists and fsync its directory once either way: the removal fsyncs
/// it itself; with nothing to remove, what an earlier step or run changed there (an unlink,
/// a new link) is made durable all the same.
fn remove_then_sync_dir(file: &Path) -> anyhow::Result<()> {
    if !crate::fs::remove_file_if_exists(file)? {
        if let Some(dir) = file.parent() {
            crate::fs::sync_dir(dir)?;
        }
    }
    Ok(())
}
