//! packaging/kubernetes/daemonset.yaml: valid against the Kubernetes API's schema
//! (kubernetes-validate --strict, from PyPI, with the schemas inside: no cluster and no
//! network; `kubectl --dry-run=client` needs a cluster to ask for them), and the
//! settings the schema does not check: the security context the API server would
//! refuse or a reviewer would miss, what the agent writes on a read-only root, the
//! node's name, the health probe, where the metrics listen, the image's version.
//! Needs no root; scripts/setup.sh installs kubernetes-validate.
use std::process::Command;

use portex_e2e::{Value, unit_caps, workspace_root};

fn manifest_path() -> String {
    workspace_root()
        .join("packaging/kubernetes/daemonset.yaml")
        .display()
        .to_string()
}

#[test]
fn the_schema_of_the_kubernetes_api_accepts_the_manifest() {
    // As a module: pip under pyenv makes no command shim until a rehash.
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", &manifest_path()])
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{said}");
    assert!(
        out.status.success(),
        "kubernetes-validate --strict (pip; scripts/setup.sh):\n{said}"
    );
    for kind in ["namespace/portex", "daemonset/portex"] {
        assert!(
            said.contains(&format!("passed for resource {kind}")),
            "{said}"
        );
    }
}

/// The manifest's documents as JSON (PyYAML comes with kubernetes-validate).
fn documents() -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            &manifest_path(),
        ])
        .output()
        .expect("python3 with PyYAML (scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

#[test]
fn the_daemonset_runs_the_agent_as_the_unit_does() {
    let docs = documents();
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];

    // Not privileged; no escalation; a read-only root.
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    // The API server refuses allowPrivilegeEscalation: false beside "CAP_SYS_ADMIN"
    // (apis/core/validation: ValidateSecurityContext); the schema does not know that.
    let add: Vec<&str> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(!add.contains(&"CAP_SYS_ADMIN"), "{add:?}");
    // Exactly the unit's capabilities (tests/tests/capabilities.rs: each is needed).
    let unit: Vec<String> = unit_caps().iter().map(|c| c.to_uppercase()).collect();
    assert_eq!(add, unit);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(pod["automountServiceAccountToken"], false);

    // Every directory it writes is a volume, not the read-only root.
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let output = args
        .iter()
        .find_map(|a| a.strip_prefix("--output="))
        .expect("--output");
    let output_dir = std::path::Path::new(output)
        .parent()
        .unwrap()
        .to_str()
        .unwrap();
    let mounts = c["volumeMounts"].as_array().unwrap();
    for dir in [output_dir, "/run/portex"] {
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{dir} is not a volume: the root is read-only"));
        assert_ne!(m["readOnly"], true, "{dir} is read-only");
    }

    // host.name is the node's name.
    let env = c["env"].as_array().unwrap();
    let from = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
    };
    assert_eq!(from("NODE_NAME"), Some("spec.nodeName".into()));

    // Metrics on the pod's address (the node's, with hostNetwork), not every interface.
    let metrics = args
        .iter()
        .find_map(|a| a.strip_prefix("--metrics="))
        .expect("--metrics");
    assert_eq!(metrics, "$(POD_IP):9633");
    assert_eq!(from("POD_IP"), Some("status.podIP".into()));
    assert_eq!(c["ports"][0]["containerPort"], 9633);

    // Restarted when the pipeline stalls.
    for probe in ["livenessProbe", "startupProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], 9633, "{probe}");
    }

    // The image of this version as `cargo xtask dist` names it (and a node that
    // imported the archive knows it), never :latest.
    assert_eq!(
        c["image"],
        format!("localhost/portex:{}", env!("CARGO_PKG_VERSION")),
        "the DaemonSet names the image of this version"
    );

    // Pod Security admission lets it in.
    let ns = docs
        .iter()
        .find(|d| d["kind"] == "Namespace")
        .expect("a Namespace");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
}
