//! The OCI image: packaging/oci/Containerfile (FROM scratch) around the static binary,
//! built with podman, tagged localhost/portex:VERSION and saved as an OCI archive (what
//! `podman load`, `skopeo copy oci-archive:...` and containerd's `ctr images import` read).
use std::{fs, process::Command};

use anyhow::Result;

use super::{Dist, VERSION, image_tag, run_cmd, stdout_of};

pub(super) fn build(d: &Dist) -> Result<()> {
    // The context holds the binary and the Containerfile, nothing else.
    let context = d.out.join("image-context");
    fs::create_dir_all(&context)?;
    fs::copy(d.binary(), context.join("portex"))?;
    fs::copy(
        d.root.join("packaging/oci/Containerfile"),
        context.join("Containerfile"),
    )?;
    let tag = image_tag();
    // The image of an earlier run goes (a new build would leave it untagged behind).
    if Command::new("podman")
        .args(["image", "exists", &tag])
        .status()?
        .success()
    {
        run_cmd(
            Command::new("podman")
                .args(["rmi", "--force", &tag])
                .stdout(std::process::Stdio::null()),
        )?;
    }
    // --quiet still prints the image id: kept off the output.
    stdout_of(
        Command::new("podman")
            .args([
                "build",
                "--quiet",
                "--pull=never",
                "--no-cache",
                "--layers=false",
            ])
            .args(["--build-arg", &format!("VERSION={VERSION}")])
            .args(["--tag", &tag, "--file"])
            .arg(context.join("Containerfile"))
            .arg(&context),
    )?;
    run_cmd(
        Command::new("podman")
            .args(["save", "--quiet", "--format", "oci-archive", "--output"])
            .arg(d.image_archive())
            .arg(&tag),
    )?;
    fs::remove_dir_all(&context)?;
    eprintln!(
        "dist: image {tag} (podman images), saved as {}",
        d.image_archive().display()
    );
    Ok(())
}
