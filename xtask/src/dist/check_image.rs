//! The image, without a container runtime (this machine cannot run containers): the
//! saved OCI archive is unpacked, its manifest and config read (one layer, the
//! entrypoint, the version label), its layer extracted into a root filesystem, and the
//! entrypoint run chrooted into it as a runtime would start it: in its own mount
//! namespace, /proc mounted, the host's /sys bound in (tracefs, BTF and cgroups come
//! with it, as the DaemonSet's hostPath volumes bring them), the root filesystem
//! read-only (the DaemonSet's readOnlyRootFilesystem), the config's environment only.
use std::{fs, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{Dist, VERSION, image_tag, run_bounded, run_cmd, status_ran, watch_ran};

/// A blob of the archive by its digest ("sha256:HEX").
fn blob(oci: &Path, digest: &str) -> Result<std::path::PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()))
        .with_context(|| format!("not a sha256 digest: {digest}"))?;
    Ok(oci.join("blobs/sha256").join(hex))
}

fn json(path: &Path) -> Result<Value> {
    let bytes = fs::read(path).with_context(|| path.display().to_string())?;
    serde_json::from_slice(&bytes).with_context(|| path.display().to_string())
}

/// The entrypoint and environment of the image's config, after checking what it says.
fn read_config(oci: &Path) -> Result<(Vec<String>, Vec<String>, Value)> {
    let index = json(&oci.join("index.json"))?;
    let [entry] = index["manifests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    else {
        bail!("index.json: not one manifest: {index}");
    };
    let name = &entry["annotations"]["org.opencontainers.image.ref.name"];
    if name.as_str() != Some(image_tag().as_str()) {
        bail!(
            "index.json names the image {name}, expected {}",
            image_tag()
        );
    }
    let manifest = json(&blob(oci, entry["digest"].as_str().unwrap_or_default())?)?;
    let layers = manifest["layers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let [layer] = layers else {
        bail!("FROM scratch plus the binary is one layer; the image has {layers:?}");
    };
    let config = json(&blob(
        oci,
        manifest["config"]["digest"].as_str().unwrap_or_default(),
    )?)?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let c = &config["config"];
    let entrypoint = strings(&c["Entrypoint"]);
    let version = &c["Labels"]["org.opencontainers.image.version"];
    if config["architecture"] != "amd64"
        || config["os"] != "linux"
        || entrypoint != ["/usr/bin/portex"]
        || version.as_str() != Some(VERSION)
    {
        bail!("the image's config: {config}");
    }
    Ok((entrypoint, strings(&c["Env"]), layer.clone()))
}

pub(super) fn run(d: &Dist) -> Result<()> {
    let tmp = portex_e2e::TmpDir::new("dist-image");
    let (oci, rootfs, logs) = (tmp.join("oci"), tmp.join("rootfs"), tmp.join("logs"));
    for dir in [&oci, &rootfs, &logs] {
        fs::create_dir_all(dir)?;
    }
    run_cmd(
        Command::new("tar")
            .arg("-xf")
            .arg(d.image_archive())
            .arg("-C")
            .arg(&oci),
    )?;
    let (entrypoint, env, layer) = read_config(&oci)?;
    // GNU tar recognises the layer's compression (gzip, or none) by itself.
    let layer = blob(&oci, layer["digest"].as_str().unwrap_or_default())?;
    run_cmd(
        Command::new("tar")
            .arg("-xf")
            .arg(&layer)
            .arg("-C")
            .arg(&rootfs),
    )?;
    let mut files = Vec::new();
    walk(&rootfs, &rootfs, &mut files)?;
    if files != ["usr", "usr/bin", "usr/bin/portex"] {
        bail!("the image holds {files:?}, expected only usr/bin/portex");
    }
    if fs::read(rootfs.join("usr/bin/portex"))? != fs::read(d.binary())? {
        bail!("the image's /usr/bin/portex is not the dist binary");
    }
    // Mount points, as a runtime makes them.
    for dir in ["proc", "sys"] {
        fs::create_dir(rootfs.join(dir))?;
    }
    let contained = |args: &[&str]| -> Result<super::Finished> {
        // The mounts live in the child's own mount namespace and end with it.
        let script = r#"set -e
root=$1; shift
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount -o remount,bind,ro "$root"
chroot=$(command -v chroot)
exec env -i "$@" "$chroot" "$root" "$entrypoint" $args"#;
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&rootfs)
        .args(&env)
        .env("entrypoint", &entrypoint[0])
        .env("args", args.join(" "));
        run_bounded(&mut cmd, Duration::from_secs(60), &logs)
    };
    status_ran(&contained(&["status"])?)?;
    watch_ran(&contained(&["watch", "--duration", "2"])?)?;
    // Nothing stays mounted here (the namespace is gone): empty mount points.
    for dir in ["proc", "sys"] {
        if fs::read_dir(rootfs.join(dir))?.next().is_some() {
            // Not removed: removing would recurse into the host's /proc or /sys.
            std::mem::forget(tmp);
            bail!("{} is still mounted", rootfs.join(dir).display());
        }
    }
    eprintln!(
        "dist: image {}: one layer (/usr/bin/portex, the dist binary); its entrypoint ran status and watch --duration 2 chrooted into the exported root filesystem (read-only, /proc and /sys mounted)",
        image_tag()
    );
    Ok(())
}

/// Paths under `root`, relative, sorted.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        out.push(path.strip_prefix(root)?.display().to_string());
        if e.file_type()?.is_dir() {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}
