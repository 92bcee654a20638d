//! What the lab reports about runs, all folded from the event streams:
//! per-console transcripts and their stable part (snapshots), the boot
//! timeline, and a sweep's `results.json`, `junit.xml` and `report.html`
//! ([`html`]), written by [`ReportWriter`] from the same sweep events the
//! terminal display reads; across sweeps, [`trends`].

pub mod html;
pub mod junit;
pub mod results;
pub mod timeline;
pub mod transcript;
pub mod trends;

use crate::build::write_atomically;
use crate::sweep::events::{SweepConsumer, SweepEvent};
use anyhow::{Context, Result};
use html::{SweepSections, REPORT_HTML};
use results::{SweepFold, SweepRecord};
use std::path::{Path, PathBuf};

/// File names in a sweep's directory.
pub const RESULTS_JSON: &str = "results.json";
pub const JUNIT_XML: &str = "junit.xml";

/// Writes `results.json`, `junit.xml` and `report.html` into the sweep
/// directory when the sweep finishes.
#[derive(Debug, Default)]
pub struct ReportWriter {
    fold: SweepFold,
    sections: SweepSections,
    dir: Option<PathBuf>,
    error: Option<anyhow::Error>,
}

impl ReportWriter {
    fn write(&self, dir: &Path) -> Result<()> {
        let record = self.fold.record();
        let mut json = serde_json::to_vec_pretty(&record)?;
        json.push(b'\n');
        write_atomically(&dir.join(RESULTS_JSON), &json)?;
        let xml = junit::report(&record)
            .to_string()
            .context("serialising junit.xml")?;
        write_atomically(&dir.join(JUNIT_XML), xml.as_bytes())?;
        let page = html::sweep_page(&record, self.sections.sections());
        html::write_page(&page, &dir.join(REPORT_HTML))
    }
}

impl SweepConsumer for ReportWriter {
    fn on_event(&mut self, event: &SweepEvent) {
        match event {
            SweepEvent::Started { dir, scenarios, .. } => {
                self.dir = Some(dir.clone());
                self.sections.started(scenarios);
            }
            SweepEvent::Run { attempt, event } => self.sections.run_event(*attempt, event),
            _ => {}
        }
        if let Some(finished) = self.fold.on_event(event) {
            self.sections.finished(finished);
        }
        if let (SweepEvent::Finished { .. }, Some(dir)) = (event, &self.dir) {
            if let Err(e) = self.write(dir) {
                self.error = Some(e);
            }
        }
    }

    fn finish(self: Box<Self>) -> Result<()> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Reads a sweep's `results.json`.
pub fn read_results(path: &Path) -> Result<SweepRecord> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}
