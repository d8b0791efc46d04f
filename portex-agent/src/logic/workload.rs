//! Workload identity: the container's name and image, and the Kubernetes pod's name and
//! namespace, as the container runtime recorded them when it created the container.
//! Pure: each parser takes the bytes of one runtime file (sys::containers finds and reads
//! them) and returns what it could find; a file that is not what it should be gives
//! nothing, never an error the agent has to handle.
//!
//! Where each runtime keeps them (checked against the runtimes' sources and, for podman,
//! a container created here):
//! - containerd (CRI plugin): the OCI config.json of the task bundle
//!   (`/run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`),
//!   annotations `io.kubernetes.cri.container-name`, `.image-name`, `.sandbox-name`,
//!   `.sandbox-namespace` (a pod's sandbox: `io.kubernetes.cri.podsandbox.image-name`).
//! - CRI-O: the OCI config.json it saves in the container's run and static directories
//!   (`/run/containers/storage/overlay-containers/<id>/userdata/config.json`), with the
//!   kubelet's labels copied into annotations (`io.kubernetes.container.name`,
//!   `io.kubernetes.pod.name`, `io.kubernetes.pod.namespace`) and
//!   `io.kubernetes.cri-o.ImageName` (`io.kubernetes.cri-o.Image`: the image as asked).
//! - docker: `/var/lib/docker/containers/<id>/config.v2.json`, `Name` ("/web") and
//!   `Config.Image`; cri-dockerd puts the kubelet's labels in `Config.Labels`.
//! - podman: its config.json has no name or image (only `io.container.manager: libpod`
//!   and `io.podman.annotations.*`); containers/storage's
//!   `/var/lib/containers/storage/overlay-containers/containers.json` does: `names` and
//!   the `metadata` string (`{"image-name":...,"name":...}`).
use std::collections::HashMap;

use serde::Deserialize;

/// What a runtime recorded about a container. Every field is validated text (see
/// `clean`), absent when the runtime did not record it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// The container's name (Kubernetes: the container's name in the pod spec).
    pub name: Option<String>,
    /// The image as the runtime names it (`docker.io/library/nginx:1.27`).
    pub image: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

impl Workload {
    pub fn is_empty(&self) -> bool {
        self == &Workload::default()
    }
}

/// The longest value kept. Kubernetes names are at most 253 bytes and image references
/// stay well below this; a longer value is not a name a runtime wrote.
pub const MAX_VALUE_BYTES: usize = 512;

/// A value fit to show: non-empty, at most MAX_VALUE_BYTES, no control character (a
/// runtime validates names; a control character means the file is not the runtime's).
/// Quotes and backslashes stay: the renderers escape them.
fn clean(v: Option<&str>) -> Option<String> {
    let v = v?.trim();
    (!v.is_empty() && v.len() <= MAX_VALUE_BYTES && !v.chars().any(char::is_control))
        .then(|| v.to_string())
}

/// The first of `keys` that `map` has with a usable value.
fn first(map: &HashMap<String, String>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| clean(map.get(*k).map(String::as_str)))
}

/// The part of an OCI runtime config (config.json) that is read: its annotations.
#[derive(Deserialize)]
struct OciSpec {
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// Annotations of containerd's CRI plugin (containerd internal/cri/annotations).
mod cri {
    pub(super) const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    pub(super) const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
    pub(super) const SANDBOX_IMAGE_NAME: &str = "io.kubernetes.cri.podsandbox.image-name";
    pub(super) const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    pub(super) const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
}

/// The kubelet's container labels (k8s.io/kubelet/pkg/types), which CRI-O copies into
/// the annotations and cri-dockerd into docker's labels.
mod kubelet {
    pub(super) const POD_NAME: &str = "io.kubernetes.pod.name";
    pub(super) const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub(super) const CONTAINER_NAME: &str = "io.kubernetes.container.name";
}

/// CRI-O's own annotations (cri-o internal/annotations).
mod crio {
    pub(super) const IMAGE_NAME: &str = "io.kubernetes.cri-o.ImageName";
    pub(super) const IMAGE: &str = "io.kubernetes.cri-o.Image";
}

/// The workload in an OCI runtime config.json (containerd, CRI-O; podman's has none).
pub fn parse_oci_config(bytes: &[u8]) -> Workload {
    let Ok(spec) = serde_json::from_slice::<OciSpec>(bytes) else {
        return Workload::default();
    };
    let a = &spec.annotations;
    Workload {
        name: first(a, &[cri::CONTAINER_NAME, kubelet::CONTAINER_NAME]),
        image: first(
            a,
            &[
                cri::IMAGE_NAME,
                cri::SANDBOX_IMAGE_NAME,
                crio::IMAGE_NAME,
                crio::IMAGE,
            ],
        ),
        pod_name: first(a, &[cri::SANDBOX_NAME, kubelet::POD_NAME]),
        pod_namespace: first(a, &[cri::SANDBOX_NAMESPACE, kubelet::POD_NAMESPACE]),
    }
}

#[derive(Deserialize)]
struct DockerConfigV2 {
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Config")]
    config: Option<DockerContainerConfig>,
}

#[derive(Deserialize)]
struct DockerContainerConfig {
    #[serde(rename = "Image")]
    image: Option<String>,
    #[serde(rename = "Labels", default)]
    labels: Option<HashMap<String, String>>,
}

/// The workload in docker's config.v2.json. A container that cri-dockerd created for
/// Kubernetes carries the kubelet's labels: its name is then the pod spec's, not
/// docker's generated `k8s_<container>_<pod>_...`.
pub fn parse_docker_config(bytes: &[u8]) -> Workload {
    let Ok(c) = serde_json::from_slice::<DockerConfigV2>(bytes) else {
        return Workload::default();
    };
    let labels = c
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    Workload {
        name: first(&labels, &[kubelet::CONTAINER_NAME])
            .or_else(|| clean(c.name.as_deref().map(|n| n.trim_start_matches('/')))),
        image: clean(c.config.as_ref().and_then(|c| c.image.as_deref())),
        pod_name: first(&labels, &[kubelet::POD_NAME]),
        pod_namespace: first(&labels, &[kubelet::POD_NAMESPACE]),
    }
}

/// One entry of containers/storage's containers.json.
#[derive(Deserialize)]
struct StorageContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    /// A JSON document in a string, written by the tool that created the container.
    #[serde(default)]
    metadata: String,
}

/// What podman and CRI-O put in an entry's `metadata`. (CRI-O's `pod-name` is its
/// sandbox name, `k8s_<pod>_<namespace>_<uid>_<attempt>`, not the pod's: not read.)
#[derive(Deserialize, Default)]
struct StorageMetadata {
    #[serde(rename = "image-name")]
    image_name: Option<String>,
    name: Option<String>,
}

/// The workload of container `id` in containers/storage's containers.json (podman; the
/// store CRI-O shares). None when the file does not list it.
pub fn parse_storage_containers(bytes: &[u8], id: &str) -> Option<Workload> {
    let list: Vec<StorageContainer> = serde_json::from_slice(bytes).ok()?;
    let c = list.into_iter().find(|c| c.id == id)?;
    let meta: StorageMetadata = serde_json::from_str(&c.metadata).unwrap_or_default();
    Some(Workload {
        name: clean(meta.name.as_deref()).or_else(|| clean(c.names.first().map(String::as_str))),
        image: clean(meta.image_name.as_deref()),
        pod_name: None,
        pod_namespace: None,
    })
}

#[cfg(test)]
mod tests;
