//! What QEMU boots for a scenario: first a pure plan of the files
//! ([`BootPlan`], labelled as snapshots show them), then their resolution
//! into host paths by building crates, preparing images and the VMs'
//! disks. The plan alone gives the QEMU command line, so it is
//! snapshot-tested without building. Preparing a run also computes the
//! values of the scenario's run-time variables (each filled disk's md5).

use super::events::{Emitter, EventKind};
use super::Lab;
use crate::build;
use crate::bundle::{self, VmFiles};
use crate::disk::DiskContents;
use crate::firmware;
use crate::images::initramfs::Program;
use crate::images::manifest::{BootFormat, Manifest};
use crate::images::{self, ImageOptions};
use crate::qemu::cmdline::SecureWorldFiles;
use crate::qemu::{qemu_command_of, BootFiles, DiskFile, LabeledPath, NetPort, QemuCommand};
use crate::scenario::{disk_md5_variable, BootMode, KernelSource, Scenario};
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
    /// The raw file of disk `index` of a directly booted VM.
    Disk { vm: String, index: usize },
    /// TF-A + OP-TEE's flash image, built from Debian's sources.
    SecureWorldFlash,
    /// The file the secure UART (OP-TEE's console) writes in the run
    /// directory.
    SecureConsole,
}

impl Artifact {
    /// The stable name of the file in snapshots and command lines.
    pub fn label(&self) -> String {
        match self {
            Artifact::Crate(krate) => format!("{krate}.bin"),
            Artifact::ImageKernel(image) => format!("{image}/kernel"),
            Artifact::ImageInitramfs(image) => format!("{image}/initramfs"),
            Artifact::Bundle => "bundle.cpio".into(),
            Artifact::Disk { vm, index } => format!("{vm}/{}.raw", bundle::disk_name(*index)),
            Artifact::SecureWorldFlash => "secure-world/flash.bin".into(),
            Artifact::SecureConsole => SECURE_CONSOLE_LOG.into(),
        }
    }
}

/// The secure UART's transcript in a run directory (OP-TEE's console).
pub const SECURE_CONSOLE_LOG: &str = "secure-console.log";

/// What one QEMU process boots: `-kernel`, an initrd (or the hypervisor's
/// bundle), and for a direct boot its VM's disk files and network ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    pub kernel: Artifact,
    /// A directly booted raw image's load address (it goes in with QEMU's
    /// generic loader, not `-kernel`).
    pub raw_load: Option<u64>,
    pub initrd: Option<Artifact>,
    /// A direct boot's disks (QEMU's virtio-blk), read-only or not; under
    /// the hypervisor the disks travel in the bundle.
    pub disks: Vec<(Artifact, bool)>,
    /// A direct boot's interfaces (QEMU's virtio-net on socket netdevs),
    /// their ports not yet chosen.
    pub net: Vec<NetPort>,
    /// `machine.secure-world`: TF-A and OP-TEE boot first.
    pub secure_world: bool,
}

/// The files a scenario boots, one plan per QEMU process: the hypervisor's
/// one, or one per VM of a direct boot; `images` says how a directly
/// booted image boots.
pub fn plan(scenario: &Scenario, images: &Manifest) -> Result<Vec<BootPlan>> {
    let secure_world = scenario.machine.secure_world;
    if secure_world && scenario.boot == BootMode::Direct {
        bail!("`secure-world: true` needs `boot: hypervisor`: the hypervisor is TF-A's BL33");
    }
    if secure_world && scenario.machine.hypervisor_args.is_some() {
        bail!("`secure-world: true` takes no `hypervisor-args`: TF-A passes the hypervisor no command line");
    }
    match scenario.boot {
        BootMode::Hypervisor => Ok(vec![BootPlan {
            kernel: Artifact::Crate(build::HYPERVISOR_CRATE.into()),
            raw_load: None,
            initrd: (!scenario.vms.is_empty()).then_some(Artifact::Bundle),
            disks: Vec::new(),
            net: Vec::new(),
            secure_world,
        }]),
        BootMode::Direct if scenario.vms.is_empty() => bail!("`boot: direct` needs a VM"),
        BootMode::Direct => (0..scenario.vms.len())
            .map(|index| direct_plan(scenario, index, images))
            .collect(),
    }
}

/// The plan of the QEMU process that boots VM `index` directly.
fn direct_plan(scenario: &Scenario, index: usize, images: &Manifest) -> Result<BootPlan> {
    let vm = &scenario.vms[index];
    let disks = vm
        .disks
        .iter()
        .enumerate()
        .map(|(index, disk)| {
            let vm = vm.name.clone();
            (Artifact::Disk { vm, index }, disk.read_only)
        })
        .collect();
    let net = vm
        .net
        .iter()
        .enumerate()
        .map(|(n, interface)| NetPort {
            switch: interface.switch.clone(),
            mac: scenario.mac(vm, n),
            // The switch's first interface in VM order listens.
            listen: scenario
                .vms
                .iter()
                .flat_map(|other| other.net.iter().map(move |i| (other, i)))
                .find(|(_, i)| i.switch == interface.switch)
                .is_some_and(|(first, _)| first.name == vm.name),
            port: None,
        })
        .collect();
    match &vm.kernel {
        KernelSource::Crate(_) if vm.initramfs => {
            bail!(
                "VM {}: `initramfs: true` needs a Linux image kernel",
                vm.name
            )
        }
        KernelSource::Crate(krate) => Ok(BootPlan {
            kernel: Artifact::Crate(krate.clone()),
            raw_load: None,
            initrd: None,
            disks,
            net,
            secure_world: false,
        }),
        KernelSource::Image(image) => Ok(BootPlan {
            kernel: Artifact::ImageKernel(image.clone()),
            raw_load: direct_raw_load(vm, images.require(image)?.format)?,
            initrd: vm
                .initramfs
                .then(|| Artifact::ImageInitramfs(image.clone())),
            disks,
            net,
            secure_world: false,
        }),
    }
}

/// Where a directly booted raw image goes: QEMU's `-kernel` would treat it
/// as Linux (its DTB after the initrd slot); QEMU's generic loader puts it
/// at its address and starts CPU 0 there, and QEMU's DTB then goes to the
/// base of RAM, where firmware looks for it. Such a boot takes no
/// `-append`, so the VM's `cmdline` must be empty.
fn direct_raw_load(vm: &crate::scenario::Vm, format: Option<BootFormat>) -> Result<Option<u64>> {
    match format {
        Some(BootFormat::Raw { load, .. }) if !vm.cmdline.is_empty() => bail!(
            "VM {}: a raw image booted directly ({load:#x}) cannot take a `cmdline`",
            vm.name
        ),
        Some(BootFormat::Raw { load, .. }) => Ok(Some(load)),
        _ => Ok(None),
    }
}

/// The command lines of the plans with placeholder paths and ports, one
/// per QEMU process: for snapshots, which show only the labels; `images`
/// as for [`plan`].
pub fn planned_commands(
    qemu: &Path,
    scenario: &Scenario,
    images: &Manifest,
) -> Result<Vec<QemuCommand>> {
    let placeholder = |artifact: &Artifact| LabeledPath::new(artifact.label(), "/unresolved");
    Ok(plan(scenario, images)?
        .iter()
        .enumerate()
        .map(|(index, plan)| {
            let files = BootFiles {
                kernel: placeholder(&plan.kernel),
                raw_load: plan.raw_load,
                initrd: plan.initrd.as_ref().map(placeholder),
                disks: plan
                    .disks
                    .iter()
                    .map(|(disk, read_only)| DiskFile {
                        file: placeholder(disk),
                        read_only: *read_only,
                    })
                    .collect(),
                net: plan.net.clone(),
                firmware: plan.secure_world.then(|| SecureWorldFiles {
                    flash: placeholder(&Artifact::SecureWorldFlash),
                    secure_console: placeholder(&Artifact::SecureConsole),
                }),
            };
            qemu_command_of(qemu, scenario, index, &files)
        })
        .collect())
}

/// A run, prepared: what each QEMU process boots (one per VM of a direct
/// boot, else one), and the values of the scenario's run-time variables
/// (`(name, value)`).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub files: Vec<BootFiles>,
    pub run_values: Vec<(String, String)>,
}

/// Builds and fetches what the plans name; a bundle and its trees as text,
/// and a direct boot's disk files, go to `out_dir` (the run directory).
pub fn resolve(
    lab: &Lab,
    scenario: &Scenario,
    offline: bool,
    out_dir: &Path,
    emitter: &Emitter,
) -> Result<Prepared> {
    let images_manifest = Manifest::load(&lab.root)?;
    // The scenario's images, checked against images.yaml before anything
    // is built: the error points into the scenario file.
    let file = crate::scenario::scenarios_dir(&lab.root).join(format!("{}.yaml", scenario.name));
    if let Ok(text) = std::fs::read_to_string(&file) {
        images::check_images(scenario, &file, &text, &images_manifest)?;
    }
    let plans = plan(scenario, &images_manifest)?;
    let image_options = ImageOptions {
        offline,
        cache_dir: None,
    };
    let programs = initramfs_programs(lab, scenario, emitter)?;
    let disks = disk_contents(lab, scenario, &image_options, emitter)?;
    let run_values = scenario
        .vms
        .iter()
        .zip(&disks)
        .flat_map(|(vm, contents)| {
            contents
                .iter()
                .enumerate()
                .filter(|(_, disk)| disk.image.is_some())
                .map(|(index, disk)| (disk_md5_variable(&vm.name, index), disk.md5()))
        })
        .collect();
    // Images prepared so far, by name and whether with the initramfs.
    let mut guests: Vec<((String, bool), images::GuestFiles)> = Vec::new();
    let mut resolve_one = |artifact: &Artifact, with_initramfs: bool| -> Result<LabeledPath> {
        let label = artifact.label();
        let path = match artifact {
            Artifact::Crate(krate) => {
                stage(emitter, &format!("build {krate}"), || {
                    build::build_flat_binary(&lab.root, &lab.target_dir, krate)
                })?
                .path
            }
            Artifact::ImageKernel(image) | Artifact::ImageInitramfs(image) => {
                let key = (image.clone(), with_initramfs);
                let files = match guests.iter().find(|(k, _)| *k == key) {
                    Some((_, files)) => files.clone(),
                    None => {
                        let files = stage(emitter, &format!("prepare image {image}"), || {
                            images::prepare_guest(
                                &lab.root,
                                image,
                                with_initramfs,
                                &programs,
                                &image_options,
                            )
                        })?;
                        guests.push((key, files.clone()));
                        files
                    }
                };
                match artifact {
                    Artifact::ImageKernel(_) => files.kernel,
                    _ => files
                        .initramfs
                        .context("the image came without an initramfs")?,
                }
            }
            Artifact::Bundle => {
                let files = vm_files(lab, scenario, &programs, &disks, &image_options, emitter)?;
                stage(emitter, "pack bundle", || {
                    // The run directory is named by the run id.
                    let run_id = out_dir.file_name().unwrap_or_default().to_string_lossy();
                    bundle::pack(scenario, &files, &run_id)?.write_to(out_dir)
                })?
            }
            Artifact::SecureWorldFlash => stage(emitter, "build secure world", || {
                firmware::flash_image(&lab.root, None, offline)
            })?,
            Artifact::SecureConsole => out_dir.join(SECURE_CONSOLE_LOG),
            Artifact::Disk { vm, index } => {
                let contents = scenario
                    .vms
                    .iter()
                    .position(|v| &v.name == vm)
                    .and_then(|v| disks.get(v)?.get(*index))
                    .with_context(|| format!("VM {vm} has no disk {index}"))?;
                let path = out_dir.join(label.replace('/', "-"));
                stage(emitter, &format!("write {label}"), || {
                    contents.write_raw(&path)
                })?;
                path
            }
        };
        Ok(LabeledPath::new(label, path))
    };
    let mut files = Vec::new();
    for plan in &plans {
        let with_initramfs = plan.initrd.is_some();
        let kernel = resolve_one(&plan.kernel, with_initramfs)?;
        let initrd = plan
            .initrd
            .as_ref()
            .map(|initrd| resolve_one(initrd, with_initramfs))
            .transpose()?;
        let disks = plan
            .disks
            .iter()
            .map(|(disk, read_only)| {
                Ok(DiskFile {
                    file: resolve_one(disk, with_initramfs)?,
                    read_only: *read_only,
                })
            })
            .collect::<Result<_>>()?;
        let firmware = if plan.secure_world {
            Some(SecureWorldFiles {
                flash: resolve_one(&Artifact::SecureWorldFlash, with_initramfs)?,
                secure_console: resolve_one(&Artifact::SecureConsole, with_initramfs)?,
            })
        } else {
            None
        };
        files.push(BootFiles {
            kernel,
            raw_load: plan.raw_load,
            initrd,
            disks,
            net: plan.net.clone(),
            firmware,
        });
    }
    Ok(Prepared { files, run_values })
}

/// Every VM's disks (in `vms` order), the filled ones read from their
/// images.
fn disk_contents(
    lab: &Lab,
    scenario: &Scenario,
    image_options: &ImageOptions,
    emitter: &Emitter,
) -> Result<Vec<Vec<DiskContents>>> {
    let read = |vm: &str, index: usize, disk: &crate::scenario::Disk| -> Result<DiskContents> {
        let what = format!("VM {vm} disk {index}");
        let image = match &disk.image {
            Some(image) => {
                let path = images::disk_image(&lab.root, image, image_options)?;
                Some(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
            }
            None => None,
        };
        DiskContents::new(disk, image, &what)
    };
    let all = || {
        scenario
            .vms
            .iter()
            .map(|vm| {
                vm.disks
                    .iter()
                    .enumerate()
                    .map(|(index, disk)| read(&vm.name, index, disk))
                    .collect()
            })
            .collect()
    };
    if scenario.vms.iter().all(|vm| vm.disks.is_empty()) {
        return all();
    }
    stage(emitter, "prepare disks", all)
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
    disks: &[Vec<DiskContents>],
    image_options: &ImageOptions,
    emitter: &Emitter,
) -> Result<Vec<VmFiles>> {
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    scenario
        .vms
        .iter()
        .zip(disks)
        .map(|(vm, disks)| match &vm.kernel {
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
                    // The in-tree guests carry an arm64 Image header.
                    format: BootFormat::LinuxImage,
                    initrd: None,
                    disks: disks.clone(),
                })
            }
            KernelSource::Image(image) => {
                let guest = stage(emitter, &format!("prepare image {image}"), || {
                    images::prepare_guest(&lab.root, image, vm.initramfs, programs, image_options)
                })?;
                Ok(VmFiles {
                    kernel: read(&guest.kernel)?,
                    format: guest.format,
                    initrd: guest.initramfs.as_deref().map(read).transpose()?,
                    disks: disks.clone(),
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
