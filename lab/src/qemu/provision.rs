//! Finding `qemu-system-aarch64`, and installing it when the lab may: as
//! root on Debian or Ubuntu it installs `qemu-system-arm` (on bookworm from
//! bookworm-backports, whose QEMU 10 replaces bookworm's 7.2) and says what it
//! does; anywhere else it stops with the exact command to run. The decision is
//! a pure function of the facts ([`HostFacts`] → [`Plan`]) so it is tested
//! without a machine to break.

use super::cmdline::QEMU_BINARY;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the lab writes the backports source on bookworm.
pub const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";

/// The deb822 source for bookworm-backports.
pub const BACKPORTS_SOURCE_TEXT: &str = "Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

/// What the decision depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub qemu: Option<PathBuf>,
    pub is_root: bool,
    pub os: OsRelease,
    /// Some apt source already names bookworm-backports.
    pub has_backports_source: bool,
}

/// The fields of `/etc/os-release` the decision reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: String,
    pub id_like: Vec<String>,
    pub codename: String,
}

impl OsRelease {
    /// Parses `/etc/os-release` text (`KEY=value`, values optionally quoted).
    pub fn parse(text: &str) -> OsRelease {
        let mut os = OsRelease::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            match key.trim() {
                "ID" => os.id = value.to_owned(),
                "ID_LIKE" => os.id_like = value.split_whitespace().map(str::to_owned).collect(),
                "VERSION_CODENAME" => os.codename = value.to_owned(),
                _ => {}
            }
        }
        os
    }

    fn is_debian_family(&self) -> bool {
        ["debian", "ubuntu"]
            .iter()
            .any(|family| self.id == *family || self.id_like.iter().any(|id| id == family))
    }
}

/// One thing the installer does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    WriteFile { path: PathBuf, contents: String },
    Run(Vec<String>),
}

/// What to do about QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Found(PathBuf),
    Install(Vec<Action>),
    /// The lab may not install it: the message says what to run.
    Manual(String),
}

/// Decides what to do from the facts.
pub fn plan(facts: &HostFacts) -> Plan {
    if let Some(path) = &facts.qemu {
        return Plan::Found(path.clone());
    }
    let debian = facts.os.is_debian_family();
    let bookworm = facts.os.codename == "bookworm";
    let mut actions = Vec::new();
    if bookworm && !facts.has_backports_source {
        actions.push(Action::WriteFile {
            path: PathBuf::from(BACKPORTS_SOURCE),
            contents: BACKPORTS_SOURCE_TEXT.to_owned(),
        });
    }
    let run = |words: &[&str]| Action::Run(words.iter().map(|w| (*w).to_owned()).collect());
    actions.push(run(&["apt-get", "update"]));
    if bookworm {
        actions.push(run(&[
            "apt-get",
            "install",
            "-y",
            "-t",
            "bookworm-backports",
            "qemu-system-arm",
        ]));
    } else {
        actions.push(run(&["apt-get", "install", "-y", "qemu-system-arm"]));
    }
    if debian && facts.is_root {
        return Plan::Install(actions);
    }
    let message = if debian {
        let mut steps = Vec::new();
        for action in &actions {
            match action {
                Action::WriteFile { path, contents } => steps.push(format!(
                    "printf '%s' '{}' | sudo tee {}",
                    contents.replace('\n', "\\n"),
                    path.display()
                )),
                Action::Run(words) => steps.push(format!("sudo {}", words.join(" "))),
            }
        }
        format!(
            "{QEMU_BINARY} not found; install it as root with:\n  {}",
            steps.join(" && \\\n  ")
        )
    } else {
        format!(
            "{QEMU_BINARY} not found; install QEMU (>= 7.2) with AArch64 system emulation, \
             e.g. `sudo dnf install qemu-system-aarch64` (Fedora) or `brew install qemu` (macOS)"
        )
    };
    Plan::Manual(message)
}

/// The first `name` on `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Gathers the facts from this machine.
pub fn host_facts() -> HostFacts {
    let os = std::fs::read_to_string("/etc/os-release")
        .map(|text| OsRelease::parse(&text))
        .unwrap_or_default();
    HostFacts {
        qemu: find_in_path(QEMU_BINARY),
        is_root: nix::unistd::geteuid().is_root(),
        os,
        has_backports_source: apt_sources_mention("bookworm-backports"),
    }
}

fn apt_sources_mention(suite: &str) -> bool {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .any(|text| text.contains(suite))
}

/// The QEMU to run: found on `PATH`, or installed now when the lab may.
/// Errors (exit 2) carry the command the user has to run.
pub fn ensure_qemu() -> Result<PathBuf> {
    match plan(&host_facts()) {
        Plan::Found(path) => Ok(path),
        Plan::Manual(message) => bail!(message),
        Plan::Install(actions) => {
            eprintln!("lab: {QEMU_BINARY} not found; installing qemu-system-arm");
            for action in &actions {
                run_action(action)?;
            }
            find_in_path(QEMU_BINARY)
                .with_context(|| format!("{QEMU_BINARY} still missing after installing"))
        }
    }
}

fn run_action(action: &Action) -> Result<()> {
    match action {
        Action::WriteFile { path, contents } => {
            eprintln!("lab: writing {}", path.display());
            std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
        }
        Action::Run(words) => {
            eprintln!("lab: running {}", words.join(" "));
            let status = Command::new(&words[0])
                .args(&words[1..])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .with_context(|| format!("running {}", words[0]))?;
            if !status.success() {
                bail!("`{}` failed ({status})", words.join(" "));
            }
            Ok(())
        }
    }
}

/// The oldest QEMU whose `virt` board, GICv3 and `virtualization=on` the lab
/// relies on (bookworm's).
pub const MIN_QEMU_VERSION: (u32, u32) = (7, 2);

/// `(major, minor)` from `QEMU emulator version 10.0.2 (Debian ...)`.
pub fn parse_qemu_version(line: &str) -> Option<(u32, u32)> {
    let rest = line.split("version ").nth(1)?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// `qemu-system-aarch64 --version`'s first line.
pub fn qemu_version(qemu: &Path) -> Result<String> {
    let out = Command::new(qemu)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", qemu.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOKWORM: &str =
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_CODENAME=bookworm\n";
    const NOBLE: &str = "ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n";
    const FEDORA: &str = "ID=fedora\nVERSION_CODENAME=\"\"\n";

    fn facts(os: &str, root: bool, backports: bool) -> HostFacts {
        HostFacts {
            qemu: None,
            is_root: root,
            os: OsRelease::parse(os),
            has_backports_source: backports,
        }
    }

    fn commands(plan: &Plan) -> Vec<String> {
        let Plan::Install(actions) = plan else {
            panic!("expected an install plan, got {plan:?}");
        };
        actions
            .iter()
            .map(|a| match a {
                Action::WriteFile { path, .. } => format!("write {}", path.display()),
                Action::Run(words) => words.join(" "),
            })
            .collect()
    }

    #[test]
    fn parses_qemu_versions() {
        for (line, version) in [
            (
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)",
                Some((10, 0)),
            ),
            (
                "QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)",
                Some((7, 2)),
            ),
            ("QEMU emulator version 6.2.0", Some((6, 2))),
            ("not qemu", None),
        ] {
            assert_eq!(parse_qemu_version(line), version, "{line}");
        }
        assert!(Some((10, 0)) >= Some(MIN_QEMU_VERSION));
    }

    #[test]
    fn parses_os_release() {
        let os = OsRelease::parse(NOBLE);
        assert_eq!(os.id, "ubuntu");
        assert_eq!(os.id_like, ["debian"]);
        assert_eq!(os.codename, "noble");
    }

    #[test]
    fn found_qemu_is_used() {
        let mut f = facts(BOOKWORM, false, false);
        f.qemu = Some("/usr/bin/qemu-system-aarch64".into());
        assert_eq!(plan(&f), Plan::Found("/usr/bin/qemu-system-aarch64".into()));
    }

    #[test]
    fn root_on_bookworm_adds_backports_then_installs_from_it() {
        assert_eq!(
            commands(&plan(&facts(BOOKWORM, true, false))),
            [
                format!("write {BACKPORTS_SOURCE}"),
                "apt-get update".into(),
                "apt-get install -y -t bookworm-backports qemu-system-arm".into(),
            ]
        );
        assert_eq!(
            commands(&plan(&facts(BOOKWORM, true, true))),
            [
                "apt-get update",
                "apt-get install -y -t bookworm-backports qemu-system-arm"
            ]
        );
    }

    #[test]
    fn root_elsewhere_installs_plainly() {
        assert_eq!(
            commands(&plan(&facts(NOBLE, true, false))),
            ["apt-get update", "apt-get install -y qemu-system-arm"]
        );
    }

    #[test]
    fn without_root_says_the_command() {
        let Plan::Manual(message) = plan(&facts(BOOKWORM, false, false)) else {
            panic!("expected a manual plan");
        };
        assert!(message.contains("sudo apt-get install -y -t bookworm-backports qemu-system-arm"));
        assert!(message.contains(BACKPORTS_SOURCE));
        let Plan::Manual(message) = plan(&facts(FEDORA, true, false)) else {
            panic!("expected a manual plan");
        };
        assert!(
            message.contains("dnf install qemu-system-aarch64"),
            "{message}"
        );
    }
}
