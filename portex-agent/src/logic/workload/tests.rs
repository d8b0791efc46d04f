//! The parsers on files in the runtimes' real layouts (tests/fixtures/runtimes/hostroot:
//! containerd, CRI-O and docker written after their sources, podman's as podman 4.3
//! wrote them here; see the README there).
use super::*;

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/runtimes/hostroot/",
            $path
        ))
    };
}

fn w(name: &str, image: &str, pod: Option<(&str, &str)>) -> Workload {
    Workload {
        name: (!name.is_empty()).then(|| name.into()),
        image: Some(image.into()),
        pod_name: pod.map(|p| p.1.into()),
        pod_namespace: pod.map(|p| p.0.into()),
    }
}

#[test]
fn containerd_cri_names_the_container_its_image_and_its_pod() {
    let c = fixture!(
        "run/containerd/io.containerd.runtime.v2.task/k8s.io/aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11/config.json"
    );
    assert_eq!(
        parse_oci_config(c),
        w(
            "web",
            "docker.io/library/nginx:1.27",
            Some(("shop", "web-7d4b9c8f5-x2k9q"))
        )
    );
    // The pod's sandbox (pause) has no container name, and its image under another key.
    let s = fixture!(
        "run/containerd/io.containerd.runtime.v2.task/k8s.io/aa22aa22aa22aa22aa22aa22aa22aa22aa22aa22aa22aa22aa22aa22aa22aa22/config.json"
    );
    assert_eq!(
        parse_oci_config(s),
        w(
            "",
            "registry.k8s.io/pause:3.10",
            Some(("shop", "web-7d4b9c8f5-x2k9q"))
        )
    );
}

#[test]
fn cri_o_names_come_from_the_kubelet_labels_it_copies() {
    let c = fixture!(
        "run/containers/storage/overlay-containers/bb11bb11bb11bb11bb11bb11bb11bb11bb11bb11bb11bb11bb11bb11bb11bb11/userdata/config.json"
    );
    assert_eq!(
        parse_oci_config(c),
        w(
            "api",
            "quay.io/acme/api:v3",
            Some(("billing", "api-6b8f9d7c4-q8w2e"))
        )
    );
}

#[test]
fn docker_names_a_plain_container_and_cri_dockerd_a_pod() {
    let plain = fixture!(
        "var/lib/docker/containers/cc11cc11cc11cc11cc11cc11cc11cc11cc11cc11cc11cc11cc11cc11cc11cc11/config.v2.json"
    );
    assert_eq!(
        parse_docker_config(plain),
        w("shop-web", "nginx:1.27", None)
    );
    let kube = fixture!(
        "var/lib/docker/containers/cc22cc22cc22cc22cc22cc22cc22cc22cc22cc22cc22cc22cc22cc22cc22cc22/config.v2.json"
    );
    let k = parse_docker_config(kube);
    assert_eq!(
        k.name.as_deref(),
        Some("web"),
        "the pod spec's name, not k8s_..."
    );
    assert_eq!(
        (k.pod_namespace.as_deref(), k.pod_name.as_deref()),
        (Some("shop"), Some("web-7d4b9c8f5-x2k9q"))
    );
}

#[test]
fn podman_names_are_in_the_storage_list_not_in_its_config() {
    const ID: &str = "103510498ac0012ff99feda4d2bed2f5522f5575a4ef160bd23c5e5d0b23814f";
    let cfg = fixture!(
        "var/lib/containers/storage/overlay-containers/103510498ac0012ff99feda4d2bed2f5522f5575a4ef160bd23c5e5d0b23814f/userdata/config.json"
    );
    assert!(parse_oci_config(cfg).is_empty());
    let list = fixture!("var/lib/containers/storage/overlay-containers/containers.json");
    assert_eq!(
        parse_storage_containers(list, ID),
        Some(w("web-1", "registry.example/team/web:2.1", None))
    );
    assert_eq!(
        parse_storage_containers(
            list,
            "c8854b828e4d2364353f368d0b4fb757c11af46cc7f7e64a3a981ea183dce8d5"
        ),
        Some(w("ecs-probe", "localhost/ecs-test:1", None))
    );
    assert_eq!(parse_storage_containers(list, &"0".repeat(64)), None);
}

#[test]
fn what_is_not_a_runtime_file_gives_nothing() {
    for junk in [
        &b""[..],
        b"null",
        b"[]",
        b"{\"annotations\":7}",
        b"{\"annotations\":{\"io.kubernetes.pod.name\":3}}",
        b"\xff\xfe{",
        b"{\"Name\":[1]}",
    ] {
        assert!(parse_oci_config(junk).is_empty(), "{junk:?}");
        assert!(parse_docker_config(junk).is_empty(), "{junk:?}");
        assert_eq!(parse_storage_containers(junk, "x"), None, "{junk:?}");
    }
}

#[test]
fn values_with_control_characters_or_too_long_are_dropped_quotes_kept() {
    let long = "a".repeat(MAX_VALUE_BYTES + 1);
    let spec = serde_json::json!({"annotations": {
        "io.kubernetes.cri.container-name": "evil\u{1b}[2J",
        "io.kubernetes.cri.image-name": long,
        "io.kubernetes.cri.sandbox-name": "we\"ird\\pod",
        "io.kubernetes.cri.sandbox-namespace": "  ",
        "io.kubernetes.pod.namespace": "fallback",
    }});
    let got = parse_oci_config(spec.to_string().as_bytes());
    assert_eq!(got.name, None);
    assert_eq!(got.image, None);
    assert_eq!(got.pod_name.as_deref(), Some("we\"ird\\pod"));
    assert_eq!(got.pod_namespace.as_deref(), Some("fallback"));
    assert!(clean(Some(&"é".repeat(MAX_VALUE_BYTES / 2))).is_some());
}
