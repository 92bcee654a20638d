//! Which images the scenarios use, read loosely from `scenarios/*.yaml`
//! (only `vms[].kernel.image`, `vms[].initramfs` and `vms[].disks[].image`;
//! the scenario loader checks the rest), so `lab fetch` warms the cache for
//! all of them.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use serde_yaml::Value;

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
