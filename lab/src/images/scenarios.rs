//! Which images the scenarios use, read loosely from `scenarios/*.yaml`
//! (only `vms[].kernel.image`, `vms[].initramfs` and `vms[].disks[].image`;
//! the scenario loader checks the rest), so `lab fetch` warms the cache for
//! all of them; and whether a loaded scenario's images are declared in
//! images.yaml with a kind that fits their use ([`check_images`]).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use serde_yaml::Value;

use super::manifest::{ImageKind, Manifest};
use crate::scenario::{KernelSource, Scenario, ScenarioError};

/// Checks, before anything is built or fetched, that every image the
/// scenario in `file` (its text `text`) names is declared in images.yaml
/// and fits its use: a kernel is a `linux-kernel` or `bare-metal` image,
/// the lab's initramfs goes with a `linux-kernel`, a disk is a `disk`. The
/// error points at the name in the scenario.
pub fn check_images(
    scenario: &Scenario,
    file: &Path,
    text: &str,
    images: &Manifest,
) -> Result<(), ScenarioError> {
    let names: Vec<&str> = images.images.iter().map(|i| i.name.as_str()).collect();
    for (index, vm) in scenario.vms.iter().enumerate() {
        let kernel = match &vm.kernel {
            KernelSource::Image(image) => Some(image),
            KernelSource::Crate(_) => None,
        };
        let uses = kernel.map(|image| (image, "kernel")).into_iter().chain(
            vm.disks
                .iter()
                .filter_map(|d| d.image.as_ref())
                .map(|i| (i, "disks")),
        );
        for (image, field) in uses {
            let fail = |message: String| {
                let (line, column) = locate_image(text, &vm.name, field, image);
                Err(ScenarioError::at(
                    file,
                    line,
                    column,
                    &format!("vms[{index}].{field}"),
                    message,
                ))
            };
            let Some(declared) = images.image(image) else {
                return fail(format!(
                    "image {image:?} is not declared in {} (declared: {})",
                    super::manifest::MANIFEST_PATH,
                    names.join(", ")
                ));
            };
            let fits = match (field, declared.kind) {
                ("kernel", ImageKind::LinuxKernel) => true,
                ("kernel", ImageKind::BareMetal) => !vm.initramfs,
                ("disks", ImageKind::Disk) => true,
                _ => false,
            };
            if !fits {
                let what = match field {
                    "kernel" if vm.initramfs => "a linux-kernel image (`initramfs: true`)",
                    "kernel" => "a linux-kernel or bare-metal image",
                    _ => "a disk image",
                };
                return fail(format!(
                    "image {image:?} is a {:?} image; this needs {what}",
                    declared.kind
                ));
            }
        }
    }
    Ok(())
}

/// Where `image` is named in VM `vm`'s entry: the first line holding
/// `image: <image>` at or after its `name: <vm>` line and then its `field`
/// (`kernel`, `disks`); 1:1 when there is none.
fn locate_image(text: &str, vm: &str, field: &str, image: &str) -> (usize, usize) {
    let vm_line = text
        .lines()
        .position(|line| {
            line.trim_start()
                .trim_start_matches("- ")
                .strip_prefix("name:")
                .is_some_and(|v| v.trim().trim_matches(['"', '\'']) == vm)
        })
        .unwrap_or(0);
    let key = format!("{field}:");
    let start = text
        .lines()
        .enumerate()
        .skip(vm_line)
        .find(|(_, line)| line.contains(&key))
        .map_or(vm_line, |(n, _)| n);
    text.lines()
        .enumerate()
        .skip(start)
        .find_map(|(n, line)| {
            let at = line.find("image:")?;
            let value = line[at + "image:".len()..]
                .trim_start()
                .trim_start_matches(['"', '\'']);
            let rest = value.strip_prefix(image)?;
            (!rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-'))
                .then_some((n + 1, at + 1))
        })
        .unwrap_or((1, 1))
}

/// `(image, with_initramfs)` for every VM of every scenario, without repeats,
/// sorted.
pub fn image_uses(workspace_root: &Path) -> Result<Vec<(String, bool)>> {
    let dir = workspace_root.join("scenarios");
    let mut uses = BTreeSet::new();
    let entries =
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|ext| ext != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let doc: Value =
            serde_yaml::from_str(&text).with_context(|| format!("{}: not YAML", path.display()))?;
        uses.extend(uses_in(&doc));
    }
    Ok(uses.into_iter().collect())
}

fn uses_in(doc: &Value) -> Vec<(String, bool)> {
    let Some(vms) = doc.get("vms").and_then(Value::as_sequence) else {
        return Vec::new();
    };
    let kernels = vms.iter().filter_map(|vm| {
        let image = vm.get("kernel")?.get("image")?.as_str()?;
        let initramfs = vm
            .get("initramfs")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Some((image.to_owned(), initramfs))
    });
    let disks = vms
        .iter()
        .filter_map(|vm| vm.get("disks")?.as_sequence())
        .flatten()
        .filter_map(|disk| Some((disk.get("image")?.as_str()?.to_owned(), false)));
    kernels.chain(disks).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGES: &str = "schema: 1\nbusybox: bb\nimages:\n  - { name: bb, description: d, kind: busybox, path: bb }\n  - { name: k, description: d, kind: linux-kernel, path: k }\n  - { name: fw, description: d, kind: bare-metal, path: fw }\n  - { name: d, description: d, kind: disk, path: d }\n";

    fn check(vms: &str) -> Result<(), String> {
        let text = format!(
            "schema: 1\nname: t\ndescription: d\nmachine: {{ cpus: 1, memory-mib: 512 }}\nvms:\n{vms}steps: []\n"
        );
        let scenario = Scenario::parse(Path::new("t.yaml"), &text).unwrap();
        let images = Manifest::parse(Path::new("images.yaml"), IMAGES).unwrap();
        check_images(&scenario, Path::new("t.yaml"), &text, &images).map_err(|e| e.to_string())
    }

    #[test]
    fn images_must_be_declared_and_fit_their_use() {
        let vm = |kernel: &str, extra: &str| {
            format!("  - name: vm0\n    kernel: {{ image: {kernel} }}\n{extra}    vcpus: 1\n    memory-mib: 64\n")
        };
        assert_eq!(check(&vm("k", "    initramfs: true\n")), Ok(()));
        assert_eq!(check(&vm("fw", "")), Ok(()));
        let err = check(&vm("nope", "")).unwrap_err();
        assert!(
            err.starts_with("t.yaml:7:15: vms[0].kernel: image \"nope\" is not declared"),
            "{err}"
        );
        assert!(err.contains("(declared: bb, k, fw, d)"), "{err}");
        let err = check(&vm("fw", "    initramfs: true\n")).unwrap_err();
        assert!(
            err.contains("BareMetal image; this needs a linux-kernel image"),
            "{err}"
        );
        let err = check(&vm("d", "")).unwrap_err();
        assert!(err.contains("\"d\" is a Disk image"), "{err}");
        let err = check(&vm("k", "    disks: [{ image: k }]\n")).unwrap_err();
        assert!(err.starts_with("t.yaml:8:"), "{err}");
        assert!(
            err.contains(
                "vms[0].disks: image \"k\" is a LinuxKernel image; this needs a disk image"
            ),
            "{err}"
        );
    }
}
