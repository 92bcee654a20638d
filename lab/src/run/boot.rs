//! What QEMU boots for a scenario: first a pure plan of the files
//! ([`BootPlan`], labelled as snapshots show them), then their resolution
//! into host paths by building crates and preparing images. The plan alone
//! gives the QEMU command line, so it is snapshot-tested without building.

use super::events::{Emitter, EventKind};
use super::Lab;
use crate::build;
use crate::bundle::{self, VmFiles};
use crate::images::initramfs::Program;
use crate::images::{self, ImageOptions};
use crate::qemu::{qemu_command, BootFiles, LabeledPath, QemuCommand};
use crate::scenario::{BootMode, KernelSource, Scenario};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Instant;

/// A file QEMU boots, before it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Artifact {
    /// A bare-metal crate of this workspace, flattened.
    Crate(String),
    /// The kernel of an image in `guest-images/images.yaml`.
    ImageKernel(String),
    /// The lab's initramfs with the modules of that image's kernel.
    ImageInitramfs(String),
    /// The hypervisor's boot bundle (manifest + per-VM files).
    Bundle,
}

impl Artifact {
    /// The stable name of the file in snapshots and command lines.
    pub fn label(&self) -> String {
        match self {
            Artifact::Crate(krate) => format!("{krate}.bin"),
            Artifact::ImageKernel(image) => format!("{image}/kernel"),
            Artifact::ImageInitramfs(image) => format!("{image}/initramfs"),
            Artifact::Bundle => "bundle.cpio".into(),
        }
    }
}

/// `-kernel` and `-initrd` of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    pub kernel: Artifact,
    pub initrd: Option<Artifact>,
}

/// The files a scenario boots.
pub fn plan(scenario: &Scenario) -> Result<BootPlan> {
    match scenario.boot {
        BootMode::Hypervisor => Ok(BootPlan {
            kernel: Artifact::Crate(build::HYPERVISOR_CRATE.into()),
            initrd: (!scenario.vms.is_empty()).then_some(Artifact::Bundle),
        }),
        BootMode::Direct => {
            let vm = scenario
                .vms
                .first()
                .context("`boot: direct` needs one VM")?;
            match &vm.kernel {
                KernelSource::Crate(_) if vm.initramfs => {
                    bail!(
                        "VM {}: `initramfs: true` needs a Linux image kernel",
                        vm.name
                    )
                }
                KernelSource::Crate(krate) => Ok(BootPlan {
                    kernel: Artifact::Crate(krate.clone()),
                    initrd: None,
                }),
                KernelSource::Image(image) => Ok(BootPlan {
                    kernel: Artifact::ImageKernel(image.clone()),
                    initrd: vm
                        .initramfs
                        .then(|| Artifact::ImageInitramfs(image.clone())),
                }),
            }
        }
    }
}

/// The command line of a plan with placeholder paths: for snapshots, which
/// show only the labels.
pub fn planned_command(qemu: &Path, scenario: &Scenario) -> Result<QemuCommand> {
    let plan = plan(scenario)?;
    let placeholder = |artifact: &Artifact| LabeledPath::new(artifact.label(), "/unresolved");
    let files = BootFiles {
        kernel: placeholder(&plan.kernel),
        initrd: plan.initrd.as_ref().map(placeholder),
    };
    Ok(qemu_command(qemu, scenario, &files))
}

/// Builds and fetches what the plan names; a bundle and its trees as text
/// go to `out_dir` (the run directory).
pub fn resolve(
    lab: &Lab,
    scenario: &Scenario,
    offline: bool,
    out_dir: &Path,
    emitter: &Emitter,
) -> Result<BootFiles> {
    if scenario.machine.secure_world {
        bail!("`secure-world: true` needs TF-A and OP-TEE, which this lab does not build yet");
    }
    let plan = plan(scenario)?;
    let image_options = ImageOptions {
        offline,
        cache_dir: None,
    };
    let programs = initramfs_programs(lab, scenario, emitter)?;
    let mut guest = None;
    let mut resolve_one = |artifact: &Artifact| -> Result<LabeledPath> {
        let label = artifact.label();
        let path = match artifact {
            Artifact::Crate(krate) => {
                stage(emitter, &format!("build {krate}"), || {
                    build::build_flat_binary(&lab.root, &lab.target_dir, krate)
                })?
                .path
            }
            Artifact::ImageKernel(image) | Artifact::ImageInitramfs(image) => {
                if guest.is_none() {
                    let with_initramfs = plan.initrd.is_some();
                    guest = Some(stage(emitter, &format!("prepare image {image}"), || {
                        images::prepare_linux_guest(
                            &lab.root,
                            image,
                            with_initramfs,
                            &programs,
                            &image_options,
                        )
                    })?);
                }
                let files = guest.as_ref().context("image prepared above")?;
                match artifact {
                    Artifact::ImageKernel(_) => files.kernel.clone(),
                    _ => files
                        .initramfs
                        .clone()
                        .context("the image came without an initramfs")?,
                }
            }
            Artifact::Bundle => {
                let files = vm_files(lab, scenario, &programs, &image_options, emitter)?;
                stage(emitter, "pack bundle", || {
                    bundle::pack(scenario, &files)?.write_to(out_dir)
                })?
            }
        };
        Ok(LabeledPath::new(label, path))
    };
    let kernel = resolve_one(&plan.kernel)?;
    let initrd = plan.initrd.as_ref().map(&mut resolve_one).transpose()?;
    Ok(BootFiles { kernel, initrd })
}

/// The programs the lab's initramfs carries, built once for the scenario;
/// none if no VM boots the initramfs.
fn initramfs_programs(lab: &Lab, scenario: &Scenario, emitter: &Emitter) -> Result<Vec<Program>> {
    if !scenario.vms.iter().any(|vm| vm.initramfs) {
        return Ok(Vec::new());
    }
    let name = format!("build {}", images::INITRAMFS_PROGRAMS.join(", "));
    stage(emitter, &name, || {
        images::initramfs_programs(&lab.root, &lab.target_dir)
    })
}

/// Reads what each VM boots: in-tree crates are built, images prepared.
fn vm_files(
    lab: &Lab,
    scenario: &Scenario,
    programs: &[Program],
    image_options: &ImageOptions,
    emitter: &Emitter,
) -> Result<Vec<VmFiles>> {
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    scenario
        .vms
        .iter()
        .map(|vm| match &vm.kernel {
            KernelSource::Crate(_) if vm.initramfs => {
                bail!(
                    "VM {}: `initramfs: true` needs a Linux image kernel",
                    vm.name
                )
            }
            KernelSource::Crate(krate) => {
                let built = stage(emitter, &format!("build {krate}"), || {
                    build::build_flat_binary(&lab.root, &lab.target_dir, krate)
                })?;
                Ok(VmFiles {
                    kernel: read(&built.path)?,
                    initrd: None,
                })
            }
            KernelSource::Image(image) => {
                let guest = stage(emitter, &format!("prepare image {image}"), || {
                    images::prepare_linux_guest(
                        &lab.root,
                        image,
                        vm.initramfs,
                        programs,
                        image_options,
                    )
                })?;
                Ok(VmFiles {
                    kernel: read(&guest.kernel)?,
                    initrd: guest.initramfs.as_deref().map(read).transpose()?,
                })
            }
        })
        .collect()
}

/// Times a preparation stage and reports it.
fn stage<T>(emitter: &Emitter, name: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let value = work().with_context(|| format!("{name} failed"))?;
    emitter.emit(EventKind::StageFinished {
        stage: name.to_owned(),
        duration: start.elapsed(),
    });
    Ok(value)
}
