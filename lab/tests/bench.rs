//! `lab bench`'s measurements, one run each, end to end on real QEMU: the
//! test guest under the hypervisor reaches its sentinel and the bench reads
//! its wall and virtual time from the run's timeline (and the run leaves
//! the `result.json` that timeline came from) and QEMU's CPU time as the
//! sentinel arrives; the disk and network benches read the guests' own
//! timings from the consoles.

use lab::bench::io::{IoBench, PING_RTT};
use lab::bench::{self, Boot, BOOT_DONE};
use lab::report::timeline::LAB_CLOCK_STAGE;
use lab::run::record::RunRecord;
use lab::run::{Lab, RunOptions};
use lab::scenario;
use std::time::Duration;

#[test]
fn one_bench_boot_is_read_from_the_record_it_leaves() {
    let lab = Lab::discover().unwrap();
    let qemu = lab::qemu::provision::ensure_qemu().unwrap();
    let scenario = scenario::load_by_name(&lab.root, "testguest_single").unwrap();
    let options = RunOptions {
        offline: true,
        ..RunOptions::default()
    };
    let (boot, run_dir) = bench::boot_once(&lab, &scenario, &qemu, &options).unwrap();

    let record: RunRecord =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("result.json")).unwrap())
            .unwrap();
    // QEMU's CPU time is sampled live, when the sentinel arrives; the
    // record has the rest.
    assert!(boot.host_cpu.is_some(), "QEMU's /proc/<pid>/stat was read");
    assert_eq!(
        Boot::from_marks(&record.timeline),
        Some(Boot {
            host_cpu: None,
            ..boot.clone()
        }),
        "the bench's reading is the record's"
    );
    assert!(BOOT_DONE.contains(&boot.stage.as_str()), "{}", boot.stage);
    let clock = record
        .timeline
        .iter()
        .find(|m| m.what == LAB_CLOCK_STAGE)
        .and_then(|m| m.guest_clock)
        .expect("the test guest prints LAB-CLOCK");
    assert_eq!(boot.virtual_time, clock.elapsed());
    // The guest's counter starts at machine reset, after QEMU did; the lab's
    // wall clock starts when it spawned QEMU.
    let virtual_time = boot.virtual_time.unwrap();
    assert!(
        virtual_time <= boot.wall,
        "{virtual_time:?} > {:?}",
        boot.wall
    );
}

/// One run of `lab bench blk`'s measurement, end to end: virtio_blk under
/// the hypervisor prints its 64 MiB read's LAB-TIME line, the bench reads
/// it from the console, and the run leaves its result.json.
#[test]
fn one_blk_bench_run_reads_the_guests_timing() {
    let lab = Lab::discover().unwrap();
    let qemu = lab::qemu::provision::ensure_qemu().unwrap();
    let [name, _] = IoBench::Blk.default_pair();
    let scenario = scenario::load_by_name(&lab.root, name).unwrap();
    let options = RunOptions {
        offline: true,
        ..RunOptions::default()
    };
    let (figures, run_dir) =
        bench::io::figures_once(&lab, &scenario, &qemu, &options, IoBench::Blk).unwrap();
    let read = figures["blk-read"];
    assert!(read > Duration::ZERO, "{read:?}");
    let console = std::fs::read_to_string(run_dir.join("console.log")).unwrap();
    // The hypervisor tags the VM's lines.
    let line = console
        .lines()
        .filter_map(|l| l.strip_prefix("[vm0] "))
        .find(|l| l.starts_with("LAB-TIME blk-read "))
        .expect("the run printed its timing");
    let fields: Vec<f64> = line
        .split_whitespace()
        .skip(2)
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(read, Duration::from_secs_f64(fields[0] / fields[1]));
    assert!(run_dir.join("result.json").is_file());
}

/// One run of `lab bench net`'s measurement, end to end, on its baseline:
/// two QEMU processes on a socket netdev; the bench reads vm0's last ping
/// summary and the 8 MiB download's LAB-TIME line.
#[test]
fn one_net_bench_run_reads_ping_and_transfer() {
    let lab = Lab::discover().unwrap();
    let qemu = lab::qemu::provision::ensure_qemu().unwrap();
    let [_, name] = IoBench::Net.default_pair();
    let scenario = scenario::load_by_name(&lab.root, name).unwrap();
    let options = RunOptions {
        offline: true,
        ..RunOptions::default()
    };
    let (figures, run_dir) =
        bench::io::figures_once(&lab, &scenario, &qemu, &options, IoBench::Net).unwrap();
    let vm0 = std::fs::read_to_string(run_dir.join("console-vm0.log")).unwrap();
    let avg_ms: f64 = vm0
        .lines()
        .filter_map(|l| l.strip_prefix("round-trip min/avg/max = "))
        .next_back()
        .and_then(|t| t.split('/').nth(1)?.parse().ok())
        .expect("vm0 printed a ping summary");
    assert_eq!(figures[PING_RTT], Duration::from_secs_f64(avg_ms / 1000.0));
    assert!(figures["tcp-recv"] > Duration::ZERO);
}
