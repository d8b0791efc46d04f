//! packaging/kubernetes/daemonset.yaml as podman options: the VM runs the image as a
//! kubelet would run that pod on a node, from what the manifest says, not from a copy
//! of it here. Mirrored: hostPID, hostNetwork, the container's security context (its
//! capabilities, no_new_privs, the read-only root, the user), the memory limit, the
//! environment (the downward API's node name and pod address filled in), the hostPath
//! volumes with their read-only flags and propagation, the image and the args ($(VAR)
//! expanded as the kubelet does). Not mirrored: probes (the checks ask /healthz
//! themselves), ports (hostNetwork maps none), requests, tolerations, dnsPolicy.
use std::{collections::BTreeMap, process::Command};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The node's name in the VM (spec.nodeName).
pub(super) const NODE_NAME: &str = "vmhost";
/// The node's primary address in the VM, which hostNetwork makes the pod's (status.podIP);
/// the guest puts it on a dummy interface (-nic none: the VM has no other).
pub(super) const NODE_IP: &str = "10.0.2.15";

/// How the guest runs the DaemonSet's container.
#[derive(Debug, PartialEq)]
pub(super) struct PodSpec {
    /// `podman run` options, before the image.
    pub options: Vec<String>,
    pub image: String,
    /// The container's args, after the image (the entrypoint is the image's).
    pub args: Vec<String>,
    /// hostPath directories of type DirectoryOrCreate: the kubelet makes them.
    pub create_dirs: Vec<String>,
    /// The address of --metrics, expanded.
    pub metrics: String,
    /// The file of --output as the node sees it (through the volume that holds it).
    pub output_on_node: String,
}

/// The manifest's documents, as JSON (PyYAML, which kubernetes-validate brings:
/// scripts/setup.sh; the manifest's test reads it the same way).
pub(super) fn read(path: &std::path::Path) -> Result<Vec<Value>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .context("python3 (with PyYAML: scripts/setup.sh)")?;
    if !out.status.success() {
        bail!(
            "reading {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| path.display().to_string())
}

fn text(v: &Value, what: &str) -> Result<String> {
    v.as_str()
        .map(str::to_owned)
        .with_context(|| format!("{what}: not a string: {v}"))
}

/// The DaemonSet's first container as podman options.
pub(super) fn pod_spec(docs: &[Value]) -> Result<PodSpec> {
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .context("the manifest holds no DaemonSet")?;
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    let mut options = Vec::new();
    if pod["hostPID"] == true {
        options.push("--pid=host".to_owned());
    }
    if pod["hostNetwork"] == true {
        options.push("--network=host".to_owned());
    }
    if sc["privileged"] == true {
        bail!("the container is privileged: the check runs the unprivileged DaemonSet");
    }
    if sc["allowPrivilegeEscalation"] == false {
        options.push("--security-opt=no-new-privileges".to_owned());
    }
    if sc["readOnlyRootFilesystem"] == true {
        // podman would add tmpfs on /tmp, /run and /var/tmp; a kubelet does not.
        options.extend([
            "--read-only".to_owned(),
            "--read-only-tmpfs=false".to_owned(),
        ]);
    }
    if let Some(uid) = sc["runAsUser"].as_u64() {
        options.push(format!("--user={uid}"));
    }
    for cap in sc["capabilities"]["drop"].as_array().into_iter().flatten() {
        options.push(format!("--cap-drop={}", text(cap, "capabilities.drop")?));
    }
    for cap in sc["capabilities"]["add"].as_array().into_iter().flatten() {
        options.push(format!("--cap-add={}", text(cap, "capabilities.add")?));
    }
    if let Some(limit) = c["resources"]["limits"]["memory"].as_str() {
        options.push(format!("--memory={}", memory(limit)?));
    }

    let mut env = BTreeMap::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = text(&e["name"], "env.name")?;
        let value = match (
            &e["value"],
            e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Value::String(v), _) => v.clone(),
            (_, Some("spec.nodeName")) => NODE_NAME.to_owned(),
            (_, Some("status.podIP" | "status.hostIP")) => NODE_IP.to_owned(),
            _ => bail!("env {name}: a source the check cannot fill: {e}"),
        };
        options.push(format!("--env={name}={value}"));
        env.insert(name, value);
    }

    let mut host_paths = BTreeMap::new();
    let mut create_dirs = Vec::new();
    for v in pod["volumes"].as_array().into_iter().flatten() {
        let name = text(&v["name"], "volumes.name")?;
        let path = text(
            &v["hostPath"]["path"],
            &format!("volume {name}: hostPath.path"),
        )?;
        if v["hostPath"]["type"] == "DirectoryOrCreate" {
            create_dirs.push(path.clone());
        }
        host_paths.insert(name, path);
    }
    // (mount path, host path), to find the node's path of the output file.
    let mut mounts = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let name = text(&m["name"], "volumeMounts.name")?;
        let host = host_paths
            .get(&name)
            .with_context(|| format!("volumeMount {name}: no hostPath volume of that name"))?;
        let target = text(&m["mountPath"], &format!("volumeMount {name}: mountPath"))?;
        let mut flags = Vec::new();
        if m["readOnly"] == true {
            flags.push("ro");
        }
        match m["mountPropagation"].as_str() {
            None | Some("None") => {}
            Some("HostToContainer") => flags.push("rslave"),
            Some("Bidirectional") => flags.push("rshared"),
            Some(other) => bail!("volumeMount {name}: mountPropagation {other}"),
        }
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(":{}", flags.join(","))
        };
        options.push(format!("--volume={host}:{target}{flags}"));
        mounts.push((target, host.clone()));
    }

    let args: Vec<String> = c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| Ok(expand(&text(a, "args")?, &env)))
        .collect::<Result<_>>()?;
    let flag = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")))
            .map(str::to_owned)
            .with_context(|| format!("the container's args have no --{name}=VALUE"))
    };
    let metrics = flag("metrics")?;
    let output = flag("output")?;
    let output_on_node = mounts
        .iter()
        .filter_map(|(target, host)| {
            let rest = output.strip_prefix(target.as_str())?;
            rest.starts_with('/')
                .then(|| (target.len(), format!("{host}{rest}")))
        })
        .max()
        .map(|(_, p)| p)
        .with_context(|| format!("--output={output} is on no volume: the root is read-only"))?;
    Ok(PodSpec {
        options,
        image: text(&c["image"], "image")?,
        args,
        create_dirs,
        metrics,
        output_on_node,
    })
}

/// A Kubernetes memory quantity as podman's --memory takes it ("256Mi" -> "256m").
fn memory(q: &str) -> Result<String> {
    for (suffix, unit) in [("Ki", "k"), ("Mi", "m"), ("Gi", "g")] {
        if let Some(n) = q.strip_suffix(suffix).filter(|n| n.parse::<u64>().is_ok()) {
            return Ok(format!("{n}{unit}"));
        }
    }
    if q.parse::<u64>().is_ok() {
        return Ok(q.to_owned());
    }
    bail!("memory limit {q}: not a quantity the check converts (Ki, Mi, Gi or bytes)")
}

/// $(VAR) replaced by the container's env, as the kubelet expands args.
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    env.iter()
        .fold(arg.to_owned(), |a, (k, v)| a.replace(&format!("$({k})"), v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_manifest_becomes_the_unit_s_sandbox_in_podman() {
        let path = crate::root().join("packaging/kubernetes/daemonset.yaml");
        let Ok(docs) = read(&path) else {
            eprintln!("skipped: python3 with PyYAML is not installed (scripts/setup.sh)");
            return;
        };
        let spec = pod_spec(&docs).unwrap();
        for want in [
            "--pid=host",
            "--network=host",
            "--security-opt=no-new-privileges",
            "--read-only",
            "--cap-drop=ALL",
            "--cap-add=SYS_ADMIN",
            "--volume=/sys/kernel/tracing:/sys/kernel/tracing:ro",
            "--volume=/run/netns:/run/netns:ro,rslave",
            "--volume=/var/log/portex:/var/log/portex",
        ] {
            assert!(spec.options.iter().any(|o| o == want), "{want}: {spec:?}");
        }
        assert_eq!(spec.image, crate::dist::image_tag());
        assert_eq!(spec.metrics, format!("{NODE_IP}:9633"));
        assert_eq!(spec.output_on_node, "/var/log/portex/events.ndjson");
        assert!(
            spec.create_dirs.iter().any(|d| d == "/run/portex"),
            "{spec:?}"
        );
    }

    #[test]
    fn quantities_and_expansions() {
        assert_eq!(memory("256Mi").unwrap(), "256m");
        assert_eq!(memory("1048576").unwrap(), "1048576");
        assert!(memory("1.5Gi").is_err());
        let env = BTreeMap::from([("POD_IP".to_owned(), "10.0.2.15".to_owned())]);
        assert_eq!(
            expand("--metrics=$(POD_IP):9633", &env),
            "--metrics=10.0.2.15:9633"
        );
    }
}
