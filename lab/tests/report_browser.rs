//! The sweep's `report.html` as a person sees it: a real sweep of the two
//! hypervisor-only fixtures (one passes, one fails), its page opened in
//! headless Chromium, and the page's structure read from the DOM Chromium
//! built: every scenario present, failures first with their rerun command,
//! the timeline's bars in boot order, consoles collapsed. The screenshot
//! stays in `target/lab/report-test/report.png` for a person to look at.
//!
//! Chromium is Debian's `chromium` package: as root on Debian the test
//! installs it (as `.ci/run` does), anywhere else it fails saying how to
//! get it. It never skips.

use lab::report::html::REPORT_HTML;
use lab::report::ReportWriter;
use lab::run::Lab;
use lab::scenario::Scenario;
use lab::sweep::events::SweepConsumer;
use lab::sweep::{run_sweep, SweepOptions};
use scraper::{Html, Selector};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sweep")
}

fn load(name: &str) -> Scenario {
    Scenario::load(&fixtures().join(format!("{name}.yaml"))).unwrap()
}

/// `chromium`, installed from Debian's archive when the test may.
fn chromium() -> PathBuf {
    let find = || {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("chromium"))
                .find(|p| p.is_file())
        })
    };
    if let Some(found) = find() {
        return found;
    }
    let root = nix::unistd::Uid::effective().is_root();
    let apt = Path::new("/usr/bin/apt-get").is_file();
    assert!(
        root && apt,
        "headless Chromium is missing: install Debian's `chromium` package \
         (`sudo apt-get install -y chromium`, or `sudo .ci/run --provision-only`)"
    );
    eprintln!("installing Debian's chromium (apt-get install -y chromium)");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends", "chromium"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .expect("running apt-get");
    assert!(status.success(), "apt-get install chromium failed");
    find().expect("chromium on PATH after installing it")
}

/// Chromium, headless, offline, with a fresh profile.
fn browse(chromium: &Path, profile: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn select<'a>(dom: &'a Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
    dom.select(&Selector::parse(css).unwrap()).collect()
}

#[test]
fn the_sweep_page_in_a_browser() {
    let chromium = chromium();
    let lab = Lab::discover().unwrap();
    let qemu = lab::qemu::provision::ensure_qemu().unwrap();
    let options = SweepOptions {
        jobs: 2,
        offline: true,
        rerun_failed: "cargo run -p lab -- sweep --only-failed".into(),
        scenario_dir: Some(fixtures()),
        ..SweepOptions::default()
    };
    let consumers: Vec<Box<dyn SweepConsumer>> = vec![Box::new(ReportWriter::default())];
    let record = run_sweep(
        &lab,
        vec![load("sweep_pass"), load("sweep_broken")],
        &qemu,
        &options,
        consumers,
    )
    .unwrap();
    let page = lab::sweep::sweeps_root(&lab.target_dir)
        .join(&record.sweep_id)
        .join(REPORT_HTML);
    let text = std::fs::read_to_string(&page).unwrap();
    for outside in ["<script", "http://", "https://", "@import", "url("] {
        assert!(!text.contains(outside), "the page uses {outside:?}");
    }

    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.display());
    let dom = browse(&chromium, profile.path(), &["--dump-dom", &url]);
    let dom = Html::parse_document(&String::from_utf8(dom).unwrap());

    // The verdict table: every scenario, the failure first with its rerun.
    let rows = select(&dom, "#verdicts tbody tr");
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r.value().attr("data-scenario").unwrap())
        .collect();
    assert_eq!(names, ["sweep_broken", "sweep_pass"]);
    let verdicts: Vec<&str> = rows
        .iter()
        .map(|r| r.value().attr("data-verdict").unwrap())
        .collect();
    assert_eq!(verdicts, ["failed", "passed"]);
    let rerun: String = select(&dom, "#verdicts tr.failed code.rerun")[0]
        .text()
        .collect();
    assert!(
        rerun.contains("cargo run -p lab -- scenario") && rerun.contains("sweep_broken.yaml"),
        "{rerun}"
    );
    assert!(select(&dom, "#verdicts tr.passed code.rerun").is_empty());

    // A section per scenario, in the table's order.
    let sections: Vec<&str> = select(&dom, "section.scenario")
        .iter()
        .map(|s| s.value().attr("data-scenario").unwrap())
        .collect();
    assert_eq!(sections, names);

    // The passing run's timeline: the hypervisor's banner, then the steps,
    // left to right on one scale.
    let bars = select(&dom, "section[data-scenario=sweep_pass] svg.timeline g.bar");
    let mut drawn: Vec<(u32, &str)> = bars
        .iter()
        .map(|g| {
            let rect = g.select(&Selector::parse("rect").unwrap()).next().unwrap();
            (
                rect.value().attr("x").unwrap().parse().unwrap(),
                g.value().attr("data-what").unwrap(),
            )
        })
        .collect();
    drawn.sort();
    let order: Vec<&str> = drawn.iter().map(|(_, what)| *what).collect();
    assert_eq!(order, ["hypervisor-start", "step 1", "step 2"], "{drawn:?}");

    // Consoles collapsed, the failing step's position marked and linked.
    assert!(!select(&dom, "details.attempt").is_empty());
    assert!(select(&dom, "details[open]").is_empty());
    let marked = select(
        &dom,
        "section[data-scenario=sweep_broken] tr.match-position[id]",
    );
    assert_eq!(marked.len(), 1, "one marked line in the failing run");
    let id = marked[0].value().attr("id").unwrap();
    assert_eq!(select(&dom, &format!("a[href='#{id}']")).len(), 1);
    let marked_text: String = marked[0].text().collect();
    assert!(marked_text.contains("hypervisor "), "{marked_text}");
    // No exit statistics: the hypervisor alone runs no VM.
    assert!(select(&dom, ".exit-stats").is_empty());

    // What a person sees.
    let shots = lab.target_dir.join("lab").join("report-test");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("report.png");
    let _ = std::fs::remove_file(&png);
    browse(
        &chromium,
        profile.path(),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1000",
            "--hide-scrollbars",
            &url,
        ],
    );
    let shot = std::fs::read(&png).unwrap();
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 10_000,
        "{}",
        png.display()
    );
    eprintln!("screenshot: {}", png.display());
}
