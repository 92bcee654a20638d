//! `lab bench boot`'s measurement of one boot, end to end on real QEMU: the
//! test guest under the hypervisor reaches its sentinel, the bench reads
//! its wall and virtual time from the run's timeline, and the run leaves
//! the `result.json` that timeline came from.

use lab::bench::{self, Boot, BOOT_DONE};
use lab::report::timeline::LAB_CLOCK_STAGE;
use lab::run::record::RunRecord;
use lab::run::{Lab, RunOptions};
use lab::scenario;

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
    assert_eq!(
        Boot::from_marks(&record.timeline).as_ref(),
        Some(&boot),
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
