//! Host tests of the guest-image pieces, without network: archive index
//! parsing, images.yaml and images.lock, `.deb` extraction, module ordering,
//! the cpio writer and the cache. Everything sits in `mod images` so
//! `cargo test -p lab images` selects it.

mod images_support;

mod images {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::Read;
    use std::path::{Path, PathBuf};

    use lab::images::cache::{sha256_hex, Cache, FetchRequest};
    use lab::images::deb::{for_each_file, path_matches};
    use lab::images::debian::{parse_depends, parse_release, PackageIndex};
    use lab::images::initramfs::{self, Entry, Node};
    use lab::images::lock::{source_key, LockFile, LockedFile, LockedImage, LockedModule};
    use lab::images::manifest::{BootFormat, ImageKind, Manifest, Source, RAW_LOAD_DEFAULT};
    use lab::images::modules::{decompress, load_order, modinfo, module_name, parse_builtin};
    use lab::images::FetchError;

    use crate::images_support::{deb, module, xz, Compression, FakeFetcher};

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/images")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    fn workspace_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_owned()
    }

    mod index {
        use super::*;

        #[test]
        fn release_lists_sha256_not_md5() {
            let release = parse_release(&fixture("Release")).unwrap();
            let packages = &release["main/binary-arm64/Packages.xz"];
            assert_eq!(
                packages.sha256,
                "2ddb1737692e8c45c53e8d57c0ce4cd21c78c5703b830c3226b1423566a06c00"
            );
            assert_eq!(packages.size, 8689464);
            assert_eq!(release.len(), 3, "only the SHA256 section counts");
        }

        #[test]
        fn release_without_sha256_section_is_an_error() {
            let err = parse_release("Origin: Debian\nMD5Sum:\n abc 1 main/x\n").unwrap_err();
            assert!(err.to_string().contains("no SHA256"), "{err}");
        }

        #[test]
        fn release_with_a_bad_line_names_it() {
            let err = parse_release("SHA256:\n nothex 12 main/x\n").unwrap_err();
            assert!(err.to_string().contains("line 2"), "{err}");
        }

        #[test]
        fn metapackage_is_followed_to_the_real_kernel() {
            let index = PackageIndex::parse(&fixture("Packages")).unwrap();
            assert_eq!(index.len(), 3);
            let meta = index.resolve("linux-image-cloud-arm64", None).unwrap();
            assert_eq!(meta.depends, ["linux-image-6.1.0-50-cloud-arm64"]);
            let real = index
                .resolve("linux-image-cloud-arm64", Some("linux-image-"))
                .unwrap();
            assert_eq!(real.name, meta.depends[0]);
            assert_eq!(real.version, "6.1.176-1");
            assert_eq!(real.filename, "pool/main/l/linux-signed-arm64/linux-image-6.1.0-50-cloud-arm64_6.1.176-1_arm64.deb");
            assert_eq!(
                real.sha256,
                "9d41a53f5d687ae1a33cf546d0ed8be955f72e5f9e97b2b4e45e41dff3353b97"
            );
            assert_eq!(real.size, 21130624);
        }

        #[test]
        fn plain_package_resolves_to_itself() {
            let index = PackageIndex::parse(&fixture("Packages")).unwrap();
            let busybox = index
                .resolve("busybox-static", Some("linux-image-"))
                .unwrap();
            assert_eq!(busybox.name, "busybox-static");
            assert_eq!(busybox.version, "1:1.35.0-4+deb12u1+b1");
        }

        #[test]
        fn missing_package_and_missing_dependency_are_named() {
            let index = PackageIndex::parse(&fixture("Packages")).unwrap();
            let err = index.resolve("linux-image-rt-arm64", None).unwrap_err();
            assert!(err.to_string().contains("linux-image-rt-arm64"), "{err}");
            let text = fixture("Packages").replace(
                "Package: linux-image-6.1.0-50-cloud-arm64\n",
                "Package: renamed\n",
            );
            let index = PackageIndex::parse(&text).unwrap();
            let err = index
                .resolve("linux-image-cloud-arm64", Some("linux-image-"))
                .unwrap_err();
            assert!(
                format!("{err:#}").contains("depends on linux-image-6.1.0-50-cloud-arm64"),
                "{err:#}"
            );
        }

        #[test]
        fn stanza_without_sha256_is_an_error_with_its_line() {
            let err =
                PackageIndex::parse("Package: a\nVersion: 1\nFilename: pool/a.deb\nSize: 1\n")
                    .unwrap_err();
            assert!(
                format!("{err:#}").contains("line 1") && format!("{err:#}").contains("SHA256"),
                "{err:#}"
            );
        }

        #[test]
        fn depends_keep_first_alternative_without_constraints() {
            let depends = parse_depends("kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, libc6:any");
            assert_eq!(depends, ["kmod", "linux-base", "initramfs-tools", "libc6"]);
        }
    }

    mod manifest {
        use super::*;

        fn parse(text: &str) -> Result<Manifest, String> {
            Manifest::parse(Path::new("images.yaml"), text).map_err(|e| e.to_string())
        }

        const GOOD: &str = "schema: 1\nbusybox: bb\nimages:\n  - name: bb\n    description: d\n    kind: busybox\n    debian:\n      package: busybox-static\n      suite: bookworm\n      architecture: arm64\n      file: bin/busybox\n  - name: local\n    description: d\n    kind: linux-kernel\n    path: my/Image\n";

        #[test]
        fn shipped_images_yaml_declares_its_images() {
            let manifest = Manifest::load(&workspace_root()).unwrap();
            let names: Vec<&str> = manifest.images.iter().map(|i| i.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "linux-cloud",
                    "linux-generic",
                    "linux-trixie",
                    "busybox",
                    "lab-disk",
                    "zephyr-hello",
                    "zephyr-sync",
                    "zephyr-philosophers",
                    "u-boot"
                ]
            );
            let zephyr = manifest.require("zephyr-hello").unwrap();
            assert_eq!(zephyr.format, Some(BootFormat::Elf));
            assert!(matches!(
                &zephyr.source,
                Source::Path {
                    sha256: Some(_),
                    ..
                }
            ));
            assert_eq!(
                manifest.require("u-boot").unwrap().format,
                Some(BootFormat::Raw {
                    load: 0x4020_0000,
                    entry: 0x4020_0000
                })
            );
            let disk = manifest.require("lab-disk").unwrap();
            assert_eq!(disk.kind, ImageKind::Disk);
            assert!(matches!(&disk.source, Source::Generated(g) if g.bytes == 4 << 20));
            assert_eq!(
                manifest.require("linux-cloud").unwrap().kind,
                ImageKind::LinuxKernel
            );
            let Source::Debian(cloud) = &manifest.require("linux-cloud").unwrap().source else {
                panic!("linux-cloud is not a Debian image");
            };
            assert_eq!(
                cloud.modules,
                [
                    "virtio",
                    "virtio_ring",
                    "virtio_mmio",
                    "virtio_net",
                    "virtio_blk"
                ]
            );
            assert_eq!(manifest.busybox, "busybox");
        }

        #[test]
        fn good_file_parses_every_source_kind() {
            let text = format!("{GOOD}  - name: zephyr\n    description: d\n    kind: bare-metal\n    url: https://example.org/zephyr.elf\n    sha256: {}\n  - name: disk\n    description: d\n    kind: disk\n    generated: {{ seed: s, bytes: 4096 }}\n", "a".repeat(64));
            let manifest = parse(&text).unwrap();
            assert!(matches!(
                manifest.require("disk").unwrap().source,
                Source::Generated(_)
            ));
            assert!(matches!(
                manifest.require("local").unwrap().source,
                Source::Path { .. }
            ));
            assert!(matches!(
                manifest.require("zephyr").unwrap().source,
                Source::Url { .. }
            ));
            let err = manifest.require("nope").unwrap_err().to_string();
            assert!(err.contains("bb, local, zephyr"), "{err}");
        }

        #[test]
        fn formats_belong_to_bare_metal_images() {
            let bare = |extra: &str| {
                parse(&format!(
                    "{GOOD}  - name: fw\n    description: d\n    kind: bare-metal\n{extra}    path: fw.bin\n"
                ))
            };
            let format =
                |text: Result<Manifest, String>| text.unwrap().require("fw").unwrap().format;
            assert_eq!(format(bare("")), Some(BootFormat::Detect));
            assert_eq!(format(bare("    format: elf\n")), Some(BootFormat::Elf));
            assert_eq!(
                format(bare("    format: raw\n")),
                Some(BootFormat::Raw {
                    load: RAW_LOAD_DEFAULT,
                    entry: RAW_LOAD_DEFAULT
                })
            );
            assert_eq!(
                format(bare("    format: raw\n    load-address: 0x40200000\n")),
                Some(BootFormat::Raw {
                    load: 0x4020_0000,
                    entry: 0x4020_0000
                })
            );
            let err = bare("    format: elf\n    load-address: 0x40200000\n").unwrap_err();
            assert!(
                err.contains("images[2].load-address: only a `format: raw` image"),
                "{err}"
            );
            let err = bare("    format: raw\n    load-address: 0x1000\n").unwrap_err();
            assert!(err.contains("0x1000 is below guest RAM"), "{err}");
            let err = parse(&GOOD.replace(
                "    kind: linux-kernel\n",
                "    kind: linux-kernel\n    format: elf\n",
            ))
            .unwrap_err();
            assert!(
                err.contains("images[1].format: only bare-metal images"),
                "{err}"
            );
            assert_eq!(
                parse(GOOD).unwrap().require("local").unwrap().format,
                Some(BootFormat::LinuxImage)
            );
            let err = bare("    sha256: nope\n").unwrap_err();
            assert!(
                err.contains("images[2].sha256: must be 64 lowercase hex digits"),
                "{err}"
            );
        }

        #[test]
        fn unknown_field_names_place_and_field() {
            let err = parse(&GOOD.replace(
                "      file: bin/busybox\n",
                "      file: bin/busybox\n      flavour: cloud\n",
            ))
            .unwrap_err();
            assert!(
                err.starts_with("images.yaml:12:7: images[0].debian: unknown field `flavour`"),
                "{err}"
            );
        }

        #[test]
        fn two_sources_are_rejected_at_the_image() {
            let err = parse(&GOOD.replace(
                "    path: my/Image\n",
                "    path: my/Image\n    url: https://x/y\n    sha256: 00\n",
            ))
            .unwrap_err();
            assert!(
                err.starts_with("images.yaml:12:5: images[1]: needs exactly one source"),
                "{err}"
            );
        }

        #[test]
        fn url_needs_a_well_formed_sha256() {
            let err =
                parse(&GOOD.replace("    path: my/Image\n", "    url: https://x/y\n")).unwrap_err();
            assert!(
                err.contains("images[1].sha256: a url image needs its sha256"),
                "{err}"
            );
            let err = parse(&GOOD.replace(
                "    path: my/Image\n",
                "    url: https://x/y\n    sha256: ABC\n",
            ))
            .unwrap_err();
            assert!(
                err.starts_with("images.yaml:16:5: images[1].sha256"),
                "{err}"
            );
        }

        #[test]
        fn modules_only_for_kernels_and_busybox_must_be_busybox() {
            let err = parse(&GOOD.replace(
                "      file: bin/busybox\n",
                "      file: bin/busybox\n      modules: [virtio]\n",
            ))
            .unwrap_err();
            assert!(
                err.starts_with("images.yaml:12:7: images[0].debian.modules"),
                "{err}"
            );
            let err = parse(&GOOD.replace("busybox: bb", "busybox: local")).unwrap_err();
            assert!(err.starts_with("images.yaml:2:1: busybox"), "{err}");
        }

        #[test]
        fn duplicate_names_and_schema_version() {
            let err = parse(&GOOD.replace("name: local", "name: bb")).unwrap_err();
            assert!(
                err.contains("images[1].name: image bb is declared twice"),
                "{err}"
            );
            let err = parse(&GOOD.replace("schema: 1", "schema: 2")).unwrap_err();
            assert!(err.starts_with("images.yaml:1:1: schema"), "{err}");
        }
    }

    mod lock {
        use super::*;

        #[test]
        fn round_trips_through_text() {
            let mut lock = LockFile {
                schema: 1,
                images: BTreeMap::new(),
            };
            lock.images.insert(
                "k".into(),
                LockedImage {
                    source: "debian k bookworm/arm64 boot/vmlinuz-*".into(),
                    package: Some("linux-image-1".into()),
                    version: Some("1:6.1-1".into()),
                    url: "https://deb.debian.org/debian/pool/k.deb".into(),
                    sha256: sha256_hex(b"deb"),
                    file: LockedFile {
                        path: "boot/vmlinuz-1".into(),
                        sha256: sha256_hex(b"kernel"),
                    },
                    modules: vec![LockedModule {
                        name: "virtio".into(),
                        path: "lib/modules/1/virtio.ko".into(),
                        sha256: sha256_hex(b"virtio"),
                    }],
                    builtin: vec!["virtio_ring".into()],
                },
            );
            let text = lock.to_text().unwrap();
            assert!(text.starts_with("# Written by"), "{text}");
            assert_eq!(LockFile::parse(&text).unwrap(), lock);
        }

        #[test]
        fn bad_hash_is_rejected() {
            let err = LockFile::parse("schema: 1\nimages:\n  x:\n    source: s\n    url: u\n    sha256: nope\n    file: { path: p, sha256: nope }\n").unwrap_err();
            assert!(
                err.to_string().contains("\"nope\" is not a sha256"),
                "{err}"
            );
        }

        #[test]
        fn shipped_lock_pins_every_public_image_of_images_yaml() {
            let root = workspace_root();
            let manifest = Manifest::load(&root).unwrap();
            let lock = LockFile::load(&root).unwrap();
            for image in &manifest.images {
                if matches!(image.source, Source::Path { .. }) {
                    continue;
                }
                let locked = lock
                    .images
                    .get(&image.name)
                    .unwrap_or_else(|| panic!("{} is not locked", image.name));
                assert_eq!(
                    locked.source,
                    source_key(&image.source),
                    "{} is stale in images.lock",
                    image.name
                );
            }
            let cloud = &lock.images["linux-cloud"];
            let names: Vec<&str> = cloud.modules.iter().map(|m| m.name.as_str()).collect();
            for wanted in [
                "virtio",
                "virtio_ring",
                "virtio_mmio",
                "virtio_net",
                "virtio_blk",
            ] {
                assert!(
                    names.contains(&wanted) || cloud.builtin.iter().any(|b| b == wanted),
                    "{wanted} missing"
                );
            }
        }
    }

    mod deb_files {
        use super::*;

        fn unpack(data: &[u8]) -> BTreeMap<String, Vec<u8>> {
            let mut files = BTreeMap::new();
            for_each_file(data, |path, contents| {
                let mut bytes = Vec::new();
                contents.read_to_end(&mut bytes)?;
                files.insert(path.to_owned(), bytes);
                Ok(())
            })
            .unwrap();
            files
        }

        #[test]
        fn every_data_compression_unpacks() {
            let files: [(&str, &[u8]); 2] = [
                ("boot/vmlinuz-1", b"kernel bytes"),
                ("bin/busybox", b"\x7fELF busybox"),
            ];
            for compression in [
                Compression::None,
                Compression::Xz,
                Compression::Gzip,
                Compression::Zstd,
            ] {
                let unpacked = unpack(&deb(&files, compression));
                let expected: BTreeMap<String, Vec<u8>> = files
                    .iter()
                    .map(|(p, d)| (p.to_string(), d.to_vec()))
                    .collect();
                assert_eq!(unpacked, expected, "{compression:?}");
            }
        }

        #[test]
        fn not_a_deb_is_an_error() {
            let err = for_each_file(&b"hello"[..], |_, _| Ok(())).unwrap_err();
            assert!(format!("{err:#}").contains("not a .deb"), "{err:#}");
            let mut builder = ar::Builder::new(Vec::new());
            builder
                .append(
                    &ar::Header::new(b"debian-binary".to_vec(), 4),
                    &b"2.0\n"[..],
                )
                .unwrap();
            let err = for_each_file(&builder.into_inner().unwrap()[..], |_, _| Ok(())).unwrap_err();
            assert!(err.to_string().contains("no data.tar"), "{err}");
        }

        #[test]
        fn patterns_match_within_one_component() {
            assert!(path_matches(
                "boot/vmlinuz-*",
                "boot/vmlinuz-6.1.0-50-cloud-arm64"
            ));
            assert!(path_matches(
                "lib/modules/*/modules.builtin",
                "lib/modules/6.1.0/modules.builtin"
            ));
            assert!(path_matches("bin/busybox", "bin/busybox"));
            assert!(!path_matches("boot/vmlinuz-*", "boot/x/vmlinuz-1"));
            assert!(!path_matches("boot/vmlinuz-*", "boot/config-1"));
            assert!(!path_matches("bin/busybox", "bin/busybox2"));
            assert!(path_matches("a*b*c", "aXXbYYc") && !path_matches("a*b*c", "aXXcYYb"));
        }
    }

    mod kernel_modules {
        use super::*;

        fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
            edges
                .iter()
                .map(|(m, deps)| (m.to_string(), deps.iter().map(|d| d.to_string()).collect()))
                .collect()
        }

        fn names(list: &[&str]) -> Vec<String> {
            list.iter().map(|s| s.to_string()).collect()
        }

        #[test]
        fn modinfo_reads_name_and_depends() {
            let info = modinfo(
                &module("virtio_net", &["virtio_ring", "virtio", "net_failover"]),
                "fallback",
            )
            .unwrap();
            assert_eq!(info.name, "virtio_net");
            assert_eq!(info.depends, ["virtio_ring", "virtio", "net_failover"]);
            let info = modinfo(&module("virtio", &[]), "fallback").unwrap();
            assert!(info.depends.is_empty());
            assert!(modinfo(b"not an elf", "x").is_err());
        }

        #[test]
        fn compressed_modules_decompress_by_extension() {
            let elf = module("virtio_blk", &["virtio"]);
            assert_eq!(decompress("a/virtio_blk.ko.xz", &xz(&elf)).unwrap(), elf);
            assert_eq!(decompress("a/virtio_blk.ko", &elf).unwrap(), elf);
            assert_eq!(
                decompress("a/virtio_blk.ko.zst", &Compression::Zstd.compress(&elf)).unwrap(),
                elf
            );
            assert!(decompress("a/virtio_blk.txt", &elf).is_err());
            assert_eq!(
                module_name("kernel/drivers/char/hw_random/virtio-rng.ko.xz"),
                "virtio_rng"
            );
        }

        #[test]
        fn dependencies_load_first() {
            let depends = graph(&[
                ("virtio", &[]),
                ("virtio_ring", &[]),
                ("virtio_mmio", &["virtio", "virtio_ring"]),
                ("virtio_net", &["virtio_ring", "virtio", "net_failover"]),
                ("net_failover", &["failover"]),
                ("failover", &[]),
                ("virtio_blk", &["virtio", "virtio_ring"]),
            ]);
            let wanted = names(&["virtio_blk", "virtio_net", "virtio_mmio"]);
            let order = load_order(&wanted, &depends, &BTreeSet::new()).unwrap();
            let position = |m: &str| {
                order
                    .iter()
                    .position(|o| o == m)
                    .unwrap_or_else(|| panic!("{m} not loaded"))
            };
            for (module, deps) in &depends {
                for dep in deps {
                    assert!(
                        position(dep) < position(module),
                        "{dep} must load before {module}: {order:?}"
                    );
                }
            }
            assert_eq!(order.len(), depends.len(), "each module once: {order:?}");
            assert_eq!(
                order,
                load_order(&wanted, &depends, &BTreeSet::new()).unwrap(),
                "stable"
            );
        }

        #[test]
        fn builtin_modules_are_skipped() {
            let depends = graph(&[("virtio_mmio", &["virtio", "virtio_ring"])]);
            let builtin = parse_builtin(
                "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n",
            );
            let order = load_order(&names(&["virtio", "virtio_mmio"]), &depends, &builtin).unwrap();
            assert_eq!(order, ["virtio_mmio"]);
        }

        #[test]
        fn unknown_module_and_cycles_are_errors() {
            let depends = graph(&[("a", &["b"]), ("b", &["a"]), ("c", &["gone"])]);
            let err = load_order(&names(&["a"]), &depends, &BTreeSet::new()).unwrap_err();
            assert!(format!("{err:#}").contains("cycle a -> b -> a"), "{err:#}");
            let err = load_order(&names(&["c"]), &depends, &BTreeSet::new()).unwrap_err();
            assert!(format!("{err:#}").contains("c depends on gone"), "{err:#}");
            let err = load_order(&names(&["nothere"]), &depends, &BTreeSet::new()).unwrap_err();
            assert!(
                format!("{err:#}").contains("nothere is neither built into the kernel"),
                "{err:#}"
            );
        }
    }

    mod cpio_writer {
        use super::*;

        /// One member read back from an archive.
        #[derive(Debug, PartialEq, Eq)]
        struct Member {
            name: String,
            mode: u32,
            rdev: (u32, u32),
            data: Vec<u8>,
        }

        fn member(name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> Member {
            Member {
                name: name.to_owned(),
                mode,
                rdev,
                data: data.to_vec(),
            }
        }

        /// Reads a newc archive back, member by member.
        fn read_back(mut archive: &[u8]) -> Vec<Member> {
            let mut entries = Vec::new();
            loop {
                let mut reader = cpio::NewcReader::new(archive).unwrap();
                if reader.entry().is_trailer() {
                    return entries;
                }
                let entry = reader.entry();
                let (name, mode, rdev) = (
                    entry.name().to_owned(),
                    entry.mode(),
                    (entry.rdev_major(), entry.rdev_minor()),
                );
                let mut data = Vec::new();
                reader.read_to_end(&mut data).unwrap();
                entries.push(Member {
                    name,
                    mode,
                    rdev,
                    data,
                });
                archive = reader.finish().unwrap();
            }
        }

        #[test]
        fn archive_reads_back_with_types_and_contents() {
            let entries = vec![
                Entry::dir("bin"),
                Entry::file("bin/busybox", b"busybox!".to_vec(), true),
                Entry::symlink("bin/sh", "busybox"),
                Entry {
                    path: "dev/console".into(),
                    node: Node::CharDevice { major: 5, minor: 1 },
                },
                Entry::file("etc/odd", vec![1, 2, 3], false),
            ];
            let read = read_back(&initramfs::write_cpio(&entries).unwrap());
            assert_eq!(
                read,
                [
                    member("bin", 0o040755, (0, 0), b""),
                    member("bin/busybox", 0o100755, (0, 0), b"busybox!"),
                    member("bin/sh", 0o120777, (0, 0), b"busybox"),
                    member("dev/console", 0o020600, (5, 1), b""),
                    member("etc/odd", 0o100644, (0, 0), &[1, 2, 3]),
                ]
            );
        }

        #[test]
        fn initramfs_holds_busybox_init_programs_and_modules_in_order() {
            let inputs = initramfs::Inputs {
                busybox: b"busybox binary".to_vec(),
                init: b"#!/bin/sh\necho hi\n".to_vec(),
                programs: vec![initramfs::Program {
                    name: "lab-clock".into(),
                    elf: b"\x7fELF clock".to_vec(),
                }],
                modules: vec![
                    ("virtio".into(), module("virtio", &[])),
                    ("virtio_mmio".into(), module("virtio_mmio", &["virtio"])),
                ],
            };
            let gz = initramfs::build(inputs.clone()).unwrap();
            assert_eq!(
                gz,
                initramfs::build(inputs.clone()).unwrap(),
                "reproducible"
            );
            let read = read_back(&crate::images_support::gunzip(&gz));
            let file = |name: &str| {
                read.iter()
                    .find(|e| e.name == name)
                    .unwrap_or_else(|| panic!("no {name}"))
            };
            assert_eq!(file("init").data, inputs.init);
            assert_eq!(file("init").mode, 0o100755);
            assert_eq!(file("bin/busybox").data, inputs.busybox);
            assert_eq!(file("bin/lab-clock").data, inputs.programs[0].elf);
            assert_eq!(file("bin/lab-clock").mode, 0o100755);
            assert_eq!(
                file(initramfs::LOAD_ORDER_FILE).data,
                b"virtio.ko\nvirtio_mmio.ko\n"
            );
            assert_eq!(file("lib/modules/virtio_mmio.ko").data, inputs.modules[1].1);
            let dirs: Vec<&str> = read
                .iter()
                .filter(|e| e.mode & 0o170000 == 0o040000)
                .map(|e| e.name.as_str())
                .collect();
            for needed in ["dev", "proc", "sys", "lib/modules", "root"] {
                assert!(dirs.contains(&needed), "{needed} missing: {dirs:?}");
            }
        }
    }

    /// The programs the initramfs carries, built as the lab builds them.
    mod programs {
        use super::*;
        use object::elf::{
            FileHeader64, EM_AARCH64, ET_EXEC, PF_W, PF_X, PT_DYNAMIC, PT_INTERP, PT_LOAD,
        };
        use object::read::elf::{FileHeader, ProgramHeader};
        use object::Endianness;

        #[test]
        fn lab_clock_is_a_static_executable_linux_can_exec() {
            let root = workspace_root();
            let target_dir = lab::build::target_dir(&root).unwrap();
            let programs = lab::images::initramfs_programs(&root, &target_dir).unwrap();
            let names: Vec<&str> = programs.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, lab::images::INITRAMFS_PROGRAMS);
            let elf = &programs[0].elf;
            let header = FileHeader64::<Endianness>::parse(&elf[..]).unwrap();
            let endian = header.endian().unwrap();
            assert_eq!(header.e_type(endian), ET_EXEC, "not position-independent");
            assert_eq!(header.e_machine(endian), EM_AARCH64);
            let segments = header.program_headers(endian, &elf[..]).unwrap();
            for ph in segments {
                let kind = ph.p_type(endian);
                assert!(
                    kind != PT_INTERP && kind != PT_DYNAMIC,
                    "a static program has no interpreter and no dynamic section"
                );
            }
            let loads: Vec<_> = segments
                .iter()
                .filter(|ph| ph.p_type(endian) == PT_LOAD)
                .collect();
            let entry = header.e_entry(endian);
            assert!(
                loads.iter().any(|ph| {
                    let start = ph.p_vaddr(endian);
                    ph.p_flags(endian) & PF_X != 0
                        && (start..start + ph.p_filesz(endian)).contains(&entry)
                }),
                "the entry {entry:#x} is in an executable segment"
            );
            for ph in &loads {
                assert!(
                    ph.p_flags(endian) & (PF_W | PF_X) != PF_W | PF_X,
                    "no segment is writable and executable"
                );
                assert_eq!(
                    ph.p_vaddr(endian) % 4096,
                    ph.p_offset(endian) % 4096,
                    "a segment Linux can mmap"
                );
            }
            for (a, b) in loads.iter().zip(loads.iter().skip(1)) {
                let end_page = (a.p_vaddr(endian) + a.p_memsz(endian)).div_ceil(4096);
                assert!(
                    end_page <= b.p_vaddr(endian) / 4096,
                    "segments with different permissions share no page"
                );
            }
            assert!(elf.len() < 64 << 10, "{} bytes: debug info?", elf.len());
        }
    }

    mod init_script {
        use super::*;

        fn script() -> String {
            std::fs::read_to_string(workspace_root().join(lab::images::INIT_SCRIPT_PATH)).unwrap()
        }

        #[test]
        fn is_valid_shell() {
            let status = std::process::Command::new("sh")
                .arg("-n")
                .arg(workspace_root().join(lab::images::INIT_SCRIPT_PATH))
                .status()
                .expect("a POSIX sh on the host");
            assert!(status.success(), "sh -n rejects guest-images/init/init");
        }

        #[test]
        fn reads_what_the_initramfs_holds_and_prints_the_sentinel() {
            let script = script();
            assert!(script.starts_with("#!/bin/sh\n"));
            assert!(
                script.contains(&format!("< /{}", initramfs::LOAD_ORDER_FILE)),
                "module list path"
            );
            for needed in [
                "lab.name=",
                "lab.ip=",
                "echo \"LAB-READY $name\"",
                "setsid cttyhack sh",
                "mount -t devtmpfs",
            ] {
                assert!(script.contains(needed), "init lacks {needed:?}");
            }
        }

        #[test]
        fn runs_every_initramfs_program_it_needs_just_before_the_sentinel() {
            let script = script();
            let clock = script
                .find("/bin/lab-clock ||")
                .expect("init runs lab-clock");
            let ready = script.find("echo \"LAB-READY $name\"").unwrap();
            assert!(clock < ready, "lab-clock runs before LAB-READY");
            let between = &script[clock..ready];
            assert_eq!(
                between.matches('\n').count(),
                2,
                "nothing but the `fi` between lab-clock and the sentinel:\n{between}"
            );
            assert!(lab::images::INITRAMFS_PROGRAMS.contains(&"lab-clock"));
        }
    }

    mod cache {
        use super::*;

        fn temp_cache() -> (tempfile::TempDir, Cache) {
            let dir = tempfile::tempdir().unwrap();
            let cache = Cache::open(dir.path()).unwrap();
            (dir, cache)
        }

        fn leftovers(cache: &Cache) -> Vec<String> {
            std::fs::read_dir(cache.root().join("objects"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        }

        fn request<'a>(url: &'a str, sha256: &'a str) -> FetchRequest<'a> {
            FetchRequest {
                url,
                sha256,
                what: "test blob",
                hint: "fix the test",
            }
        }

        #[test]
        fn insert_is_content_addressed_and_atomic() {
            let (_dir, cache) = temp_cache();
            let (sha256, path) = cache.insert(b"hello").unwrap();
            assert_eq!(sha256, sha256_hex(b"hello"));
            assert_eq!(path, cache.object_path(&sha256));
            assert_eq!(std::fs::read(&path).unwrap(), b"hello");
            assert_eq!(cache.get(&sha256, "hello").unwrap(), Some(path));
            assert!(leftovers(&cache).is_empty());
        }

        #[test]
        fn corrupted_entry_is_removed_and_fetched_again() {
            let (_dir, cache) = temp_cache();
            let fetcher = FakeFetcher::default();
            let data = b"pristine".to_vec();
            let sha256 = sha256_hex(&data);
            fetcher.serve("https://x/blob", data.clone());
            let path = cache
                .fetch(&fetcher, &request("https://x/blob", &sha256), false)
                .unwrap();
            assert_eq!(fetcher.call_count(), 1);
            cache
                .fetch(&fetcher, &request("https://x/blob", &sha256), false)
                .unwrap();
            assert_eq!(fetcher.call_count(), 1, "a hit touches no network");
            std::fs::write(&path, b"tampered").unwrap();
            assert_eq!(cache.get(&sha256, "blob").unwrap(), None);
            assert!(!path.exists(), "the corrupted entry is removed");
            std::fs::write(&path, b"tampered").unwrap();
            let again = cache
                .fetch(&fetcher, &request("https://x/blob", &sha256), false)
                .unwrap();
            assert_eq!(fetcher.call_count(), 2);
            assert_eq!(std::fs::read(again).unwrap(), data);
        }

        #[test]
        fn wrong_download_leaves_nothing_behind() {
            let (_dir, cache) = temp_cache();
            let fetcher = FakeFetcher::default();
            fetcher.serve("https://x/blob", b"other bytes".to_vec());
            let sha256 = sha256_hex(b"expected bytes");
            let err = cache
                .fetch(&fetcher, &request("https://x/blob", &sha256), false)
                .unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains(&sha256_hex(b"other bytes")) && message.contains("fix the test"),
                "{message}"
            );
            assert!(!cache.object_path(&sha256).exists());
            assert!(leftovers(&cache).is_empty(), "{:?}", leftovers(&cache));
        }

        #[test]
        fn offline_miss_names_the_object_and_the_fix() {
            let (_dir, cache) = temp_cache();
            let fetcher = FakeFetcher::default();
            let sha256 = sha256_hex(b"x");
            let err = cache
                .fetch(&fetcher, &request("https://x/blob", &sha256), true)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("test blob")
                    && err.contains("--offline")
                    && err.contains("lab -- fetch"),
                "{err}"
            );
            assert_eq!(fetcher.call_count(), 0);
        }

        #[test]
        fn missing_and_unreachable_are_told_apart() {
            let (_dir, cache) = temp_cache();
            let sha256 = sha256_hex(b"x");
            let fetcher = FakeFetcher::default();
            let err = cache
                .fetch(&fetcher, &request("https://x/gone", &sha256), false)
                .unwrap_err();
            assert!(matches!(err, FetchError::NotFound { .. }), "{err}");
            let fetcher = FakeFetcher {
                unreachable: true,
                ..FakeFetcher::default()
            };
            let err = cache
                .fetch(&fetcher, &request("https://x/gone", &sha256), false)
                .unwrap_err();
            assert!(matches!(err, FetchError::Failed { .. }), "{err}");
            assert!(leftovers(&cache).is_empty());
        }

        #[test]
        fn derived_records_point_at_verified_objects() {
            let (_dir, cache) = temp_cache();
            assert_eq!(cache.get_derived("key", "thing").unwrap(), None);
            let path = cache.insert_derived("key", b"built").unwrap();
            assert_eq!(
                cache.get_derived("key", "thing").unwrap(),
                Some(path.clone())
            );
            std::fs::write(&path, b"tampered").unwrap();
            assert_eq!(
                cache.get_derived("key", "thing").unwrap(),
                None,
                "a tampered build is rebuilt"
            );
        }
    }
}
