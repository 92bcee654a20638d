//! Schema tests against the fixture files in `lab/tests/fixtures/scenarios`.

use super::*;

fn fixture(kind: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/scenarios")
        .join(kind)
        .join(format!("{name}.yaml"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn full_file_parses_every_field() {
    let s = Scenario::load(&fixture("good", "full")).unwrap();
    assert_eq!(s.name, "full");
    assert_eq!(s.tags, ["linux", "smoke"]);
    assert_eq!(s.machine.cpus, 4);
    assert_eq!(s.machine.memory_mib, 2048);
    assert_eq!(s.machine.cpu, CpuModel::Max);
    assert_eq!(s.machine.hypervisor_args.as_deref(), Some("hv.log=debug"));
    assert_eq!(s.boot, BootMode::Hypervisor);
    assert_eq!(s.vms.len(), 2);
    assert_eq!(
        s.fail_on,
        ["Kernel panic - not syncing", "hypervisor panic at"]
    );
    assert_eq!(s.vms[0].kernel, KernelSource::Image("linux-cloud".into()));
    assert!(s.vms[0].initramfs);
    assert_eq!(s.switches, ["lan0"]);
    let net = &s.vms[0].net;
    assert_eq!(net[0].mac, Some("02:4c:41:42:00:01".parse().unwrap()));
    assert_eq!(net[0].ip, Some("10.0.0.1/24".parse().unwrap()));
    assert_eq!((net[1].mac, net[1].ip), (None, None));
    assert_eq!(s.mac(&s.vms[0], 1), net::default_mac("full", "vm0", 1));
    let disks = &s.vms[0].disks;
    assert_eq!(
        (disks[0].size_mib, disks[0].image.as_deref()),
        (Some(64), None)
    );
    assert_eq!(disks[1].image.as_deref(), Some("lab-disk"));
    assert!(disks[1].read_only && !disks[0].read_only);
    assert_eq!(s.run_variables(), ["vm0-disk1-md5"]);
    assert_eq!(s.vms[1].kernel, KernelSource::Crate("testguest".into()));
    assert!(!s.vms[1].initramfs);
    assert_eq!(
        s.steps[2],
        Step::Send {
            line: "uname -a".into(),
            console: Some("vm0".into())
        }
    );
    assert_eq!(
        s.steps[3],
        Step::Expect {
            pattern: "Linux .* aarch64".into(),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            console: None
        }
    );
    assert_eq!(
        s.steps[4],
        Step::ExpectExit {
            status: 0,
            timeout_secs: 5
        }
    );
    assert!(s.expects_exit());
}

#[test]
fn minimal_file_gets_defaults() {
    let s = Scenario::load(&fixture("good", "minimal")).unwrap();
    assert!(s.tags.is_empty());
    assert_eq!(s.machine.cpu, CpuModel::CortexA72);
    assert!(!s.machine.secure_world);
    assert_eq!(s.machine.hypervisor_args, None);
    assert_eq!(s.boot, BootMode::Hypervisor);
    assert!(s.vms.is_empty());
    assert!(s.fail_on.is_empty());
    assert!(!s.expects_exit());
}

#[test]
fn expect_patterns_expand_machine_values() {
    let s = Scenario::load(&fixture("good", "full")).unwrap();
    let Step::Expect { pattern, .. } = &s.steps[0] else {
        panic!("first step is an expect");
    };
    let re = s.expect_regex(pattern).unwrap();
    assert!(re.is_match("hypervisor 0.1.0: EL2, 4 CPUs, 2048 MiB RAM"));
    assert!(!re.is_match("hypervisor 0.1.0: EL2, 2 CPUs, 2048 MiB RAM"));
}

#[test]
fn bad_files_name_line_column_and_field() {
    let mut wrong = Vec::new();
    for (name, (line, column), message) in BAD_CASES {
        let file = fixture("bad", name);
        let err = Scenario::load(&file).unwrap_err();
        let shown = err.to_string();
        let prefix = format!("{}:{line}:{column}: ", file.display());
        if !(shown.starts_with(&prefix) && err.message.contains(message)) {
            wrong.push(format!(
                "{name}: expected {line}:{column} `{message}`, got {shown}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Each bad fixture: where the error points and what it says.
const BAD_CASES: &[(&str, (usize, usize), &str)] = &[
    (
        "bad_yaml",
        (6, 1),
        "found unexpected end of stream, while scanning a quoted scalar at line 3 column 14",
    ),
    (
        "unknown_field",
        (6, 3),
        "machine: unknown field `memroy-mib`",
    ),
    (
        "wrong_type",
        (5, 9),
        "machine.cpus: invalid type: string \"two\"",
    ),
    ("missing_field", (1, 1), "missing field `description`"),
    (
        "name_mismatch",
        (2, 1),
        "name: `something_else` must equal the file stem `name_mismatch`",
    ),
    (
        "bad_cpu",
        (4, 43),
        "machine.cpu: unknown variant `cortex-a53`",
    ),
    ("two_actions", (7, 5), "steps[1]: a step has exactly one of"),
    (
        "bad_regex",
        (6, 5),
        "steps[0]: `expect` is not a valid regex",
    ),
    (
        "unknown_variable",
        (7, 5),
        "steps[1].expect: unknown variable `{memory}`",
    ),
    (
        "unknown_console",
        (12, 5),
        "steps[0].console: no VM named `vm1`",
    ),
    (
        "direct_no_console",
        (18, 5),
        "steps[1]: with several VMs under `boot: direct` (one QEMU process each) every step names its `console`",
    ),
    (
        "exit_not_last",
        (6, 5),
        "steps[0]: `expect-exit` must be the last step",
    ),
    (
        "bad_kernel",
        (7, 13),
        "vms[0].kernel: unknown field `url`, expected `image` or `crate`",
    ),
    ("bad_fail_on", (7, 6), "fail-on[1]: regex parse error"),
    (
        "odd_memory",
        (12, 5),
        "vms[1].memory-mib: must be a multiple of 2 under the hypervisor",
    ),
    (
        "vm_name_path",
        (6, 5),
        "vms[0].name: `../../x` must be 1 to 32 letters, digits, '-' or '_'",
    ),
    (
        "too_many_vcpus",
        (8, 5),
        "vms[0].vcpus: must be between 1 and the hypervisor's limit (8)",
    ),
    (
        "more_vms_than_cpus",
        (14, 5),
        "vms[2]: 3 VMs need at least 3 CPUs",
    ),
    (
        "unknown_switch",
        (18, 9),
        "vms[1].net[0].switch: no switch named `lan1` (known: lan0)",
    ),
    (
        "duplicate_mac",
        (18, 25),
        "vms[1].net[0].mac: MAC 02:00:00:00:00:01 is already interface 0 of VM vm0",
    ),
    (
        "ip_outside_prefix",
        (19, 9),
        "vms[1].net[0].ip: 10.0.1.2/24 is outside 10.0.0.0/24, the subnet of switch `lan0` (vm0 has 10.0.0.1/24)",
    ),
    (
        "duplicate_ip",
        (18, 25),
        "vms[1].net[0].ip: address 10.0.0.1 is already interface 0 of VM vm0",
    ),
    (
        "network_address",
        (12, 25),
        "vms[0].net[0].ip: 10.0.0.0/24 is the network or broadcast address of 10.0.0.0/24",
    ),
    (
        "bad_mac",
        (12, 9),
        "vms[0].net[0]: mac `01:00:5e:00:00:01` is a multicast address",
    ),
    (
        "direct_switch",
        (6, 12),
        "switches[0]: switch `lan0`: 1 interface(s) on it; under `boot: direct`",
    ),
    (
        "disks_exceed_memory",
        (6, 3),
        "machine.memory-mib: 512 MiB cannot hold the VMs' 256 MiB of RAM and 300 MiB of disks",
    ),
    (
        "disk_without_size",
        (10, 5),
        "vms[0].disks[0]: a disk is `{ size-mib: N }` (empty) or `{ image: NAME }`",
    ),
];

#[test]
fn every_bad_fixture_has_a_case() {
    let dir = fixture("bad", "x").parent().unwrap().to_owned();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        assert!(
            BAD_CASES.iter().any(|(name, _, _)| *name == stem),
            "add {stem} to BAD_CASES"
        );
    }
}

#[test]
fn every_shipped_scenario_parses() {
    let files = scenario_files(&workspace_root()).unwrap();
    assert!(!files.is_empty(), "scenarios/ has no *.yaml");
    for file in files {
        if let Err(err) = Scenario::load(&file) {
            panic!("{err}");
        }
    }
}

#[test]
fn unknown_scenario_lists_known_ones() {
    let err = load_by_name(&workspace_root(), "no_such_scenario").unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("no scenario `no_such_scenario`"),
        "{message}"
    );
    assert!(message.contains("hv_boot"), "{message}");
}
