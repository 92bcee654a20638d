//! End-to-end tests of `lab::images::Session` against a fake Debian archive
//! (Release, Packages.xz and .debs built in the test and served by a fake
//! fetcher): resolve, lock, cache, initramfs, offline reuse, and each failure
//! the lab must explain. In `mod images` so `cargo test -p lab images` runs it.

mod images_support;

mod images {
    use std::io::Read;
    use std::path::{Path, PathBuf};

    use lab::images::cache::sha256_hex;
    use lab::images::debian::DEFAULT_MIRROR;
    use lab::images::initramfs::{Program, LOAD_ORDER_FILE};
    use lab::images::lock::LockFile;
    use lab::images::manifest::{BootFormat, RAW_LOAD_DEFAULT};
    use lab::images::{ImageOptions, Session};

    use crate::images_support::{
        arm64_image, deb, gunzip, gzip, module, xz, Compression, FakeFetcher,
    };

    const IMAGES_YAML: &str = "\
schema: 1
busybox: busybox
images:
  - name: linux-test
    description: A fake kernel.
    kind: linux-kernel
    debian:
      package: linux-image-test-arm64
      follow-depends: linux-image-
      suite: testing
      architecture: arm64
      file: boot/vmlinuz-*
      modules: [virtio_mmio, virtio_blk]
  - name: busybox
    description: A fake busybox.
    kind: busybox
    debian:
      package: busybox-static
      suite: testing
      architecture: arm64
      file: bin/busybox
";

    const KERNEL_POOL: &str = "pool/main/l/linux/linux-image-1.0-test_1.0_arm64.deb";
    const BUSYBOX_POOL: &str = "pool/main/b/busybox/busybox-static_1.35_arm64.deb";

    /// A workspace, a cache and an archive, all temporary.
    struct World {
        workspace: tempfile::TempDir,
        cache: tempfile::TempDir,
        fetcher: FakeFetcher,
        kernel: Vec<u8>,
        /// Where the kernel package keeps its modules.
        modules_dir: &'static str,
    }

    impl World {
        fn new() -> World {
            let workspace = tempfile::tempdir().unwrap();
            let root = workspace.path();
            std::fs::create_dir_all(root.join("guest-images/init")).unwrap();
            std::fs::create_dir_all(root.join("scenarios")).unwrap();
            std::fs::write(root.join("guest-images/images.yaml"), IMAGES_YAML).unwrap();
            std::fs::write(
                root.join("guest-images/init/init"),
                "#!/bin/sh\necho LAB-READY\n",
            )
            .unwrap();
            std::fs::write(
                root.join("guest-images/init/lab-time"),
                "#!/bin/sh\n\"$@\"\n",
            )
            .unwrap();
            std::fs::write(
                root.join("scenarios/fake.yaml"),
                "vms:\n  - name: vm0\n    kernel: { image: linux-test }\n    initramfs: true\n",
            )
            .unwrap();
            let mut world = World {
                workspace,
                cache: tempfile::tempdir().unwrap(),
                fetcher: FakeFetcher::default(),
                kernel: arm64_image(8192),
                modules_dir: "lib/modules/1.0-test",
            };
            world.publish("1.0");
            world
        }

        fn root(&self) -> &Path {
            self.workspace.path()
        }

        fn url(path: &str) -> String {
            format!("{DEFAULT_MIRROR}/{path}")
        }

        /// Serves an archive whose kernel package has `version`.
        fn publish(&mut self, version: &str) {
            let modules_dir = self.modules_dir;
            let virtio = xz(&module("virtio", &[]));
            let mmio = xz(&module("virtio_mmio", &["virtio", "virtio_ring"]));
            let blk = module("virtio_blk", &["virtio", "virtio_ring"]);
            let balloon = module("virtio_balloon", &["virtio"]);
            let builtin = b"kernel/drivers/virtio/virtio_ring.ko\n".to_vec();
            let vmlinuz = gzip(&self.kernel);
            let kernel_deb = deb(
                &[
                    ("boot/vmlinuz-1.0-test", &vmlinuz),
                    ("boot/config-1.0-test", b"CONFIG_VIRTIO_RING=y\n"),
                    (&format!("{modules_dir}/modules.builtin"), &builtin),
                    (
                        &format!("{modules_dir}/kernel/drivers/virtio/virtio.ko.xz"),
                        &virtio,
                    ),
                    (
                        &format!("{modules_dir}/kernel/drivers/virtio/virtio_mmio.ko.xz"),
                        &mmio,
                    ),
                    (
                        &format!("{modules_dir}/kernel/drivers/virtio/virtio_balloon.ko"),
                        &balloon,
                    ),
                    (
                        &format!("{modules_dir}/kernel/drivers/block/virtio_blk.ko"),
                        &blk,
                    ),
                ],
                Compression::Xz,
            );
            let busybox_deb = deb(&[("bin/busybox", b"fake busybox")], Compression::Zstd);
            let stanza = |name: &str, depends: &str, pool: &str, data: &[u8]| {
                format!(
                    "Package: {name}\nVersion: {version}\nArchitecture: arm64\n{depends}Description: x\n long text\nFilename: {pool}\nSize: {}\nSHA256: {}\n",
                    data.len(),
                    sha256_hex(data)
                )
            };
            let packages = [
                stanza(
                    "linux-image-test-arm64",
                    "Depends: linux-image-1.0-test (= 1.0)\n",
                    "pool/main/l/meta.deb",
                    b"meta",
                ),
                stanza(
                    "linux-image-1.0-test",
                    "Depends: kmod, linux-base (>= 4.3~)\n",
                    KERNEL_POOL,
                    &kernel_deb,
                ),
                stanza("busybox-static", "", BUSYBOX_POOL, &busybox_deb),
            ]
            .join("\n");
            let packages_xz = xz(packages.as_bytes());
            let release = format!(
                "Codename: testing\nSHA256:\n {} {} main/binary-arm64/Packages.xz\n",
                sha256_hex(&packages_xz),
                packages_xz.len()
            );
            self.fetcher
                .serve(&World::url("dists/testing/Release"), release.into_bytes());
            self.fetcher.serve(
                &World::url("dists/testing/main/binary-arm64/Packages.xz"),
                packages_xz,
            );
            self.fetcher.serve(&World::url(KERNEL_POOL), kernel_deb);
            self.fetcher.serve(&World::url(BUSYBOX_POOL), busybox_deb);
        }

        fn options(&self, offline: bool) -> ImageOptions {
            ImageOptions {
                offline,
                cache_dir: Some(self.cache.path().to_owned()),
            }
        }

        fn session(&self, offline: bool) -> Session<'_> {
            Session::open(self.root(), &self.options(offline), &self.fetcher).unwrap()
        }

        fn lock(&self) -> LockFile {
            LockFile::load(self.root()).unwrap()
        }

        fn clear_cache(&self) {
            std::fs::remove_dir_all(self.cache.path().join("objects")).unwrap();
            std::fs::remove_dir_all(self.cache.path().join("derived")).unwrap();
        }

        fn cache_leftovers(&self) -> Vec<PathBuf> {
            let mut found = Vec::new();
            for dir in ["objects", "derived"] {
                for entry in std::fs::read_dir(self.cache.path().join(dir)).unwrap() {
                    let path = entry.unwrap().path();
                    if path.file_name().unwrap().to_string_lossy().starts_with('.') {
                        found.push(path);
                    }
                }
            }
            found
        }
    }

    /// The members of a gzip'd newc archive as `(name, data)`.
    fn initramfs_members(path: &Path) -> Vec<(String, Vec<u8>)> {
        let cpio = gunzip(&std::fs::read(path).unwrap());
        let mut archive = &cpio[..];
        let mut members = Vec::new();
        loop {
            let mut reader = cpio::NewcReader::new(archive).unwrap();
            if reader.entry().is_trailer() {
                return members;
            }
            let name = reader.entry().name().to_owned();
            let mut data = Vec::new();
            reader.read_to_end(&mut data).unwrap();
            members.push((name, data));
            archive = reader.finish().unwrap();
        }
    }

    fn member<'a>(members: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
        &members
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in the initramfs"))
            .1
    }

    #[test]
    fn modules_under_usr_lib_as_trixie_ships_them() {
        let mut world = World::new();
        world.modules_dir = "usr/lib/modules/1.0-test";
        world.publish("1.0");
        let files = world
            .session(false)
            .prepare_guest("linux-test", true)
            .unwrap();
        let members = initramfs_members(files.initramfs.as_ref().unwrap());
        assert_eq!(
            member(&members, LOAD_ORDER_FILE),
            b"virtio.ko\nvirtio_mmio.ko\nvirtio_blk.ko\n"
        );
        assert_eq!(world.lock().images["linux-test"].builtin, ["virtio_ring"]);
    }

    #[test]
    fn cold_run_resolves_locks_and_builds_then_offline_reuses() {
        let world = World::new();
        let files = world
            .session(false)
            .prepare_guest("linux-test", true)
            .unwrap();
        assert_eq!(
            std::fs::read(&files.kernel).unwrap(),
            world.kernel,
            "the kernel is un-gzipped"
        );
        let members = initramfs_members(files.initramfs.as_ref().unwrap());
        assert_eq!(
            member(&members, LOAD_ORDER_FILE),
            b"virtio.ko\nvirtio_mmio.ko\nvirtio_blk.ko\n"
        );
        assert_eq!(
            member(&members, "lib/modules/virtio_mmio.ko"),
            module("virtio_mmio", &["virtio", "virtio_ring"])
        );
        assert_eq!(member(&members, "bin/busybox"), b"fake busybox");
        assert_eq!(member(&members, "init"), b"#!/bin/sh\necho LAB-READY\n");

        let lock = world.lock();
        let kernel = &lock.images["linux-test"];
        assert_eq!(kernel.package.as_deref(), Some("linux-image-1.0-test"));
        assert_eq!(kernel.version.as_deref(), Some("1.0"));
        assert_eq!(kernel.url, World::url(KERNEL_POOL));
        assert_eq!(kernel.builtin, ["virtio_ring"]);
        assert_eq!(
            lock.images["busybox"].file.sha256,
            sha256_hex(b"fake busybox")
        );

        let calls = world.fetcher.call_count();
        let again = world
            .session(true)
            .prepare_guest("linux-test", true)
            .unwrap();
        assert_eq!(again, files);
        assert_eq!(
            world.fetcher.call_count(),
            calls,
            "a warm offline run touches no network"
        );
    }

    #[test]
    fn fetch_warms_the_cache_for_the_scenarios() {
        let world = World::new();
        world.session(false).fetch(false).unwrap();
        let calls = world.fetcher.call_count();
        world.session(true).fetch(false).unwrap();
        assert_eq!(world.fetcher.call_count(), calls);
        world.clear_cache();
        let err = format!("{:#}", world.session(true).fetch(false).unwrap_err());
        assert!(
            err.contains("--offline") && err.contains("not in the cache"),
            "{err}"
        );
    }

    #[test]
    fn tampered_cache_file_is_rebuilt_from_the_cache_or_refetched() {
        let world = World::new();
        let files = world
            .session(false)
            .prepare_guest("linux-test", false)
            .unwrap();
        let lock = world.lock();
        let module = &lock.images["linux-test"].modules[0];
        let object = world.cache.path().join("objects").join(&module.sha256);
        let intact = || sha256_hex(&std::fs::read(&object).unwrap()) == module.sha256;

        std::fs::write(&object, b"tampered").unwrap();
        let calls = world.fetcher.call_count();
        assert_eq!(
            world
                .session(true)
                .prepare_guest("linux-test", false)
                .unwrap(),
            files
        );
        assert!(intact(), "re-taken from the cached .deb");
        assert_eq!(world.fetcher.call_count(), calls);

        let deb = world
            .cache
            .path()
            .join("objects")
            .join(&lock.images["linux-test"].sha256);
        std::fs::write(&object, b"tampered").unwrap();
        std::fs::write(&deb, b"tampered too").unwrap();
        let err = format!(
            "{:#}",
            world
                .session(true)
                .prepare_guest("linux-test", false)
                .unwrap_err()
        );
        assert!(
            err.contains("linux-image-1.0-test 1.0")
                && err.contains("not in the cache")
                && err.contains("--offline"),
            "{err}"
        );
        assert!(
            !deb.exists() && !object.exists(),
            "corrupted entries are removed"
        );
        assert_eq!(
            world
                .session(false)
                .prepare_guest("linux-test", false)
                .unwrap(),
            files
        );
        assert!(world.fetcher.calls.borrow()[calls..].contains(&World::url(KERNEL_POOL)));
        assert!(intact());
    }

    #[test]
    fn initramfs_carries_the_programs_and_a_changed_program_rebuilds_it() {
        let world = World::new();
        let program = |elf: &[u8]| Program {
            name: "lab-clock".into(),
            elf: elf.to_vec(),
        };
        let without = world
            .session(false)
            .prepare_guest("linux-test", true)
            .unwrap();
        let members = initramfs_members(without.initramfs.as_ref().unwrap());
        assert!(members.iter().all(|(name, _)| name != "bin/lab-clock"));

        let first = world
            .session(true)
            .with_programs(vec![program(b"clock v1")])
            .prepare_guest("linux-test", true)
            .unwrap();
        assert_ne!(first.initramfs, without.initramfs);
        let members = initramfs_members(first.initramfs.as_ref().unwrap());
        assert_eq!(member(&members, "bin/lab-clock"), b"clock v1");

        let same = world
            .session(true)
            .with_programs(vec![program(b"clock v1")])
            .prepare_guest("linux-test", true)
            .unwrap();
        assert_eq!(same, first, "the same program reuses the cached initramfs");

        let changed = world
            .session(true)
            .with_programs(vec![program(b"clock v2")])
            .prepare_guest("linux-test", true)
            .unwrap();
        assert_ne!(changed.initramfs, first.initramfs);
        let members = initramfs_members(changed.initramfs.as_ref().unwrap());
        assert_eq!(member(&members, "bin/lab-clock"), b"clock v2");
        let members = initramfs_members(first.initramfs.as_ref().unwrap());
        assert_eq!(
            member(&members, "bin/lab-clock"),
            b"clock v1",
            "a cached initramfs is never rewritten"
        );
    }

    #[test]
    fn wrong_sha256_in_the_lock_is_explained_and_nothing_is_cached() {
        let world = World::new();
        world
            .session(false)
            .prepare_guest("linux-test", true)
            .unwrap();
        let lock_path = world.root().join("guest-images/images.lock");
        let text = std::fs::read_to_string(&lock_path).unwrap();
        let pinned = world.lock().images["linux-test"].sha256.clone();
        let wrong = "0".repeat(64);
        std::fs::write(&lock_path, text.replace(&pinned, &wrong)).unwrap();
        world.clear_cache();
        let err = format!(
            "{:#}",
            world
                .session(false)
                .prepare_guest("linux-test", true)
                .unwrap_err()
        );
        assert!(
            err.contains(&format!("but {wrong} is expected"))
                && err.contains("git checkout guest-images/images.lock")
                && err.contains("fetch --update"),
            "{err}"
        );
        assert!(!world.cache.path().join("objects").join(&wrong).exists());
        assert!(
            world.cache_leftovers().is_empty(),
            "{:?}",
            world.cache_leftovers()
        );
    }

    #[test]
    fn package_gone_from_the_archive_says_how_to_update() {
        let world = World::new();
        world
            .session(false)
            .prepare_guest("linux-test", false)
            .unwrap();
        world.fetcher.withdraw(&World::url(KERNEL_POOL));
        world.clear_cache();
        let err = format!(
            "{:#}",
            world
                .session(false)
                .prepare_guest("linux-test", false)
                .unwrap_err()
        );
        assert!(
            err.contains("linux-image-1.0-test 1.0 is no longer available"),
            "{err}"
        );
        assert!(err.contains("cargo run -p lab -- fetch --update"), "{err}");
    }

    #[test]
    fn unreachable_archive_names_the_mirror_setting() {
        let world = World::new();
        let fetcher = FakeFetcher {
            unreachable: true,
            ..FakeFetcher::default()
        };
        let mut session = Session::open(world.root(), &world.options(false), &fetcher).unwrap();
        let err = format!(
            "{:#}",
            session.prepare_guest("linux-test", true).unwrap_err()
        );
        assert!(
            err.contains("cannot download") && err.contains("LAB_DEBIAN_MIRROR"),
            "{err}"
        );
        assert!(
            !world.root().join("guest-images/images.lock").exists(),
            "no lock from a failed resolve"
        );
    }

    #[test]
    fn inrelease_serves_when_release_is_missing_and_a_bad_suite_is_named() {
        let world = World::new();
        let release = World::url("dists/testing/Release");
        let text = world.fetcher.files.borrow()[&release].clone();
        let mut signed = b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n".to_vec();
        signed.extend_from_slice(&text);
        signed.extend_from_slice(
            b"-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n",
        );
        world.fetcher.withdraw(&release);
        world
            .fetcher
            .serve(&World::url("dists/testing/InRelease"), signed);
        world
            .session(false)
            .prepare_guest("linux-test", true)
            .unwrap();

        let yaml = IMAGES_YAML.replace(
            "suite: testing\n      architecture: arm64\n      file: bin",
            "suite: sid\n      architecture: arm64\n      file: bin",
        );
        std::fs::write(world.root().join("guest-images/images.yaml"), yaml).unwrap();
        let err = format!("{:#}", world.session(false).update_lock().unwrap_err());
        assert!(
            err.contains("dists/sid has neither Release nor InRelease"),
            "{err}"
        );
    }

    #[test]
    fn update_rewrites_the_lock_with_the_new_version() {
        let mut world = World::new();
        world
            .session(false)
            .prepare_guest("linux-test", false)
            .unwrap();
        world.kernel = arm64_image(4096);
        world.publish("2.0");
        let before = world.lock();
        world.session(false).update_lock().unwrap();
        let after = world.lock();
        assert_eq!(after.images["linux-test"].version.as_deref(), Some("2.0"));
        assert_ne!(
            after.images["linux-test"].sha256,
            before.images["linux-test"].sha256
        );
        let files = world
            .session(false)
            .prepare_guest("linux-test", false)
            .unwrap();
        assert_eq!(std::fs::read(files.kernel).unwrap(), world.kernel);
    }

    #[test]
    fn edited_images_yaml_re_resolves_the_stale_entry() {
        let world = World::new();
        world
            .session(false)
            .prepare_guest("linux-test", true)
            .unwrap();
        let yaml = IMAGES_YAML.replace("[virtio_mmio, virtio_blk]", "[virtio_balloon]");
        std::fs::write(world.root().join("guest-images/images.yaml"), yaml).unwrap();
        let err = format!(
            "{:#}",
            world
                .session(true)
                .prepare_guest("linux-test", true)
                .unwrap_err()
        );
        assert!(
            err.contains("no current entry in guest-images/images.lock"),
            "{err}"
        );
        let files = world
            .session(false)
            .prepare_guest("linux-test", true)
            .unwrap();
        let members = initramfs_members(files.initramfs.as_ref().unwrap());
        assert_eq!(
            member(&members, LOAD_ORDER_FILE),
            b"virtio.ko\nvirtio_balloon.ko\n"
        );
    }

    #[test]
    fn url_and_path_images() {
        let world = World::new();
        let kernel = gzip(&world.kernel);
        std::fs::write(world.root().join("Image.gz"), &kernel).unwrap();
        let extra = format!(
            "  - name: local\n    description: d\n    kind: linux-kernel\n    path: Image.gz\n  - name: zephyr\n    description: d\n    kind: bare-metal\n    url: https://example.org/zephyr.elf\n    sha256: {}\n",
            sha256_hex(b"zephyr")
        );
        std::fs::write(
            world.root().join("guest-images/images.yaml"),
            format!("{IMAGES_YAML}{extra}"),
        )
        .unwrap();
        let files = world.session(false).prepare_guest("local", false).unwrap();
        assert_eq!(std::fs::read(files.kernel).unwrap(), world.kernel);

        let err = format!(
            "{:#}",
            world.session(false).image_file("zephyr").unwrap_err()
        );
        assert!(
            err.contains("https://example.org/zephyr.elf") && err.contains("images.yaml"),
            "{err}"
        );
        world
            .fetcher
            .serve("https://example.org/zephyr.elf", b"zephyr".to_vec());
        let path = world.session(false).image_file("zephyr").unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"zephyr");
        assert_eq!(world.lock().images["zephyr"].sha256, sha256_hex(b"zephyr"));
        // Not an ELF and no `format`: raw, where QEMU puts a raw -kernel.
        let files = world.session(false).prepare_guest("zephyr", false).unwrap();
        assert_eq!(
            files.format,
            BootFormat::Raw {
                load: RAW_LOAD_DEFAULT,
                entry: RAW_LOAD_DEFAULT
            }
        );
        let err = format!(
            "{:#}",
            world
                .session(false)
                .prepare_guest("zephyr", true)
                .unwrap_err()
        );
        assert!(
            err.contains("the lab's initramfs needs a Linux kernel"),
            "{err}"
        );

        // A declared format the file contradicts, and a local file whose
        // sha256 is not the pinned one.
        std::fs::write(world.root().join("fw.bin"), b"firmware").unwrap();
        let declared = |extra: &str| {
            let text = format!(
                "{IMAGES_YAML}  - name: fw\n    description: d\n    kind: bare-metal\n    path: fw.bin\n{extra}"
            );
            std::fs::write(world.root().join("guest-images/images.yaml"), text).unwrap();
            world
                .session(false)
                .prepare_guest("fw", false)
                .map_err(|e| format!("{e:#}"))
        };
        let err = declared("    format: elf\n").unwrap_err();
        assert!(
            err.contains("declared `format: elf` but its file is not an ELF"),
            "{err}"
        );
        let sha = format!("    sha256: {}\n", sha256_hex(b"other"));
        let err = declared(&sha).unwrap_err();
        assert!(
            err.contains(&format!("has sha256 {}", sha256_hex(b"firmware"))),
            "{err}"
        );
        let sha = format!("    sha256: {}\n", sha256_hex(b"firmware"));
        assert!(declared(&sha).is_ok());
        std::fs::remove_file(world.root().join("fw.bin")).unwrap();
        let err = declared("").unwrap_err();
        assert!(err.contains("point its `path:`"), "{err}");
        // Pinned, it went into the cache: a checkout without the file (a
        // clone elsewhere) still has it; one never seen is explained.
        assert!(declared(&sha).is_ok(), "from the cache");
        let never = format!("    sha256: {}\n", sha256_hex(b"never seen"));
        let err = declared(&never).unwrap_err();
        assert!(err.contains("is in the image cache"), "{err}");
    }
}
