//! What a memory cgroup directory is to Kubernetes and docker, from the names on its path,
//! whatever the kubelet cgroup driver: cgroupfs (`kubepods/burstable/pod<uid>/<id>`) or
//! systemd (`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
//! docker-<id>.scope`), and docker's own containers outside Kubernetes.

/// kubelet's top cgroup (cgroupfs driver) and its systemd driver spelling.
pub(super) const KUBEPODS: &str = "kubepods";
pub(super) const KUBEPODS_SLICE: &str = "kubepods.slice";
/// docker's parent cgroup with the cgroupfs driver.
const DOCKER: &str = "docker";

/// kubelet's QoS classes (guaranteed pods sit directly under kubepods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Qos {
    Guaranteed,
    Burstable,
    Besteffort,
}

/// What a memory cgroup is to Kubernetes and docker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Kind {
    /// kubelet's `kubepods` (or `kubepods.slice`): every pod inherits from it.
    Kubepods,
    /// A QoS class cgroup under kubepods.
    Qos {
        qos: Qos,
    },
    Pod {
        pod_uid: String,
        qos: Qos,
    },
    Container {
        pod_uid: String,
        container_id: String,
        qos: Qos,
    },
    /// A container docker started outside Kubernetes (`/docker/<id>`, `docker-<id>.scope`).
    Docker {
        container_id: String,
    },
}

impl Kind {
    /// The kind's name, as its `kind` field in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Kubepods => "kubepods",
            Kind::Qos { .. } => "qos",
            Kind::Pod { .. } => "pod",
            Kind::Container { .. } => "container",
            Kind::Docker { .. } => "docker",
        }
    }

    pub fn pod_uid(&self) -> Option<&str> {
        match self {
            Kind::Pod { pod_uid, .. } | Kind::Container { pod_uid, .. } => Some(pod_uid),
            _ => None,
        }
    }

    pub fn container_id(&self) -> Option<&str> {
        match self {
            Kind::Container { container_id, .. } | Kind::Docker { container_id } => {
                Some(container_id)
            }
            _ => None,
        }
    }
}

/// Where a directory sits, from the names on its path.
#[derive(Debug, Clone)]
pub(super) enum Place {
    Other,
    Kubepods,
    Qos(Qos),
    Pod(String, Qos),
    /// Under a container: counted, not checked (a container's children inherit from it).
    Inside,
    DockerParent,
}

/// A container directory name: `<id>`, `docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`. Returns the ID.
pub(super) fn container_id(name: &str) -> String {
    match name.strip_suffix(".scope") {
        Some(scope) => scope
            .rsplit_once('-')
            .map(|(_, id)| id)
            .unwrap_or(scope)
            .to_string(),
        None => name.to_string(),
    }
}

/// `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd).
pub(super) fn pod_uid(name: &str) -> Option<String> {
    if let Some(uid) = name.strip_prefix("pod") {
        return (!uid.is_empty()).then(|| uid.to_string());
    }
    let slice = name.strip_prefix("kubepods-")?.strip_suffix(".slice")?;
    let (_, uid) = slice.split_once("pod")?;
    (!uid.is_empty()).then(|| uid.replace('_', "-"))
}

pub(super) fn qos_of(name: &str) -> Option<Qos> {
    match name {
        "burstable" | "kubepods-burstable.slice" => Some(Qos::Burstable),
        "besteffort" | "kubepods-besteffort.slice" => Some(Qos::Besteffort),
        _ => None,
    }
}

/// The place and the kind (when checked) of a directory named `name` under `parent`.
pub(super) fn classify(parent: &Place, name: &str) -> (Place, Option<Kind>) {
    match parent {
        Place::Other => {
            if name == KUBEPODS || name == KUBEPODS_SLICE {
                (Place::Kubepods, Some(Kind::Kubepods))
            } else if name == DOCKER {
                (Place::DockerParent, None)
            } else if name.starts_with("docker-") && name.ends_with(".scope") {
                let container_id = container_id(name);
                (Place::Inside, Some(Kind::Docker { container_id }))
            } else {
                (Place::Other, None)
            }
        }
        Place::Kubepods => {
            if let Some(qos) = qos_of(name) {
                (Place::Qos(qos), Some(Kind::Qos { qos }))
            } else if let Some(uid) = pod_uid(name) {
                let kind = Kind::Pod {
                    pod_uid: uid.clone(),
                    qos: Qos::Guaranteed,
                };
                (Place::Pod(uid, Qos::Guaranteed), Some(kind))
            } else {
                (Place::Other, None)
            }
        }
        Place::Qos(qos) => match pod_uid(name) {
            Some(uid) => {
                let kind = Kind::Pod {
                    pod_uid: uid.clone(),
                    qos: *qos,
                };
                (Place::Pod(uid, *qos), Some(kind))
            }
            None => (Place::Other, None),
        },
        Place::Pod(uid, qos) => (
            Place::Inside,
            Some(Kind::Container {
                pod_uid: uid.clone(),
                container_id: container_id(name),
                qos: *qos,
            }),
        ),
        Place::DockerParent => (
            Place::Inside,
            Some(Kind::Docker {
                container_id: name.to_string(),
            }),
        ),
        Place::Inside => (Place::Inside, None),
    }
}
