//! What is installed: the payload at the target paths (sha256 vs MANIFEST), the
//! diversions, the running kubelet and version skew. On a node without the package (no
//! MANIFEST) these checks say so and the rest of `verify` runs as usual.

use serde_json::json;

use super::{error_chain, Check, Metrics, Settings, Status};
use crate::manifest::{Manifest, ManifestError};
use crate::paths;

pub const NOT_INSTALLED: &str = "k8s-nokmem not installed: payload checks skipped";
/// dpkg's file list of the package: present while it is installed (or half-installed).
const DPKG_LIST: &str = "/var/lib/dpkg/info/k8s-nokmem.list";

/// True when the package is (or was) installed here: dpkg knows it, or the swap left state.
fn installed(root: &crate::paths::Root) -> bool {
    root.join(DPKG_LIST).exists()
        || root
            .join(std::path::Path::new(paths::STATE_DIR).join("state.json"))
            .exists()
}

pub fn checks(settings: &Settings, _metrics: &mut Metrics) -> Vec<Check> {
    let root = &settings.root;
    let shown = root.describe(paths::MANIFEST_FILE);
    match Manifest::load(&root.join(paths::MANIFEST_FILE), &shown) {
        Err(ManifestError::Read(e)) if e.is_not_found() && !installed(root) => vec![Check::new(
            "payload",
            Status::Skipped,
            format!("{NOT_INSTALLED} (no {shown})"),
        )
        .evidence(json!({"manifest": shown}))],
        Err(ManifestError::Read(e)) if e.is_not_found() => vec![Check::new(
            "payload",
            Status::Unknown,
            format!("the payload manifest {shown} is missing, yet k8s-nokmem is installed"),
        )
        .fix("reinstall the package: apt-get install --reinstall k8s-nokmem")
        .evidence(json!({"manifest": shown}))],
        Err(e) => vec![Check::new(
            "payload",
            Status::Unknown,
            format!("{}: {}", shown, error_chain(&e)),
        )
        .fix("reinstall the package: apt-get install --reinstall k8s-nokmem")],
        Ok(m) => vec![Check::new(
            "payload",
            Status::Ok,
            format!(
                "payload manifest {shown} lists {}",
                m.binaries
                    .iter()
                    .map(|b| format!("{} {}", b.name, b.version))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )],
    }
}
