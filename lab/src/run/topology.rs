//! Starting a scenario's QEMU processes: the one that runs the hypervisor
//! (or the one directly booted VM), or, for a direct boot of several VMs,
//! one per VM joined by QEMU socket netdevs on 127.0.0.1. Each switch gets a
//! free port; its first VM's QEMU listens on it and is started first, and a
//! VM that connects starts only once the port is listening. A port another
//! program took in between makes the listener fail; the lab then starts
//! over with new ports.

use super::console::Consoles;
use super::events::{Emitter, EventKind};
use super::qemu_process::QemuProcess;
use super::{artifacts, MACHINE_CONSOLE};
use crate::qemu::{qemu_command_of, BootFiles, QemuArg, QemuCommand};
use crate::scenario::{BootMode, Scenario};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a listening QEMU gets to open its port.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

/// How many times the lab picks new ports when a listener cannot bind.
const PORT_ATTEMPTS: usize = 3;

/// The console each QEMU process's lines go to (see `tagged_vms` for the
/// VMs the hypervisor's one process tags): `serial` for one process, each
/// VM's own name when a direct boot runs one process per VM.
pub fn machine_consoles(scenario: &Scenario) -> Vec<String> {
    if scenario.boot == BootMode::Direct && scenario.vms.len() > 1 {
        scenario.vms.iter().map(|vm| vm.name.clone()).collect()
    } else {
        vec![MACHINE_CONSOLE.to_owned()]
    }
}

/// The raw console log of process `index` of `count`: `console.log` for one
/// process, `console-<vm>.log` for each of several.
pub fn console_log_name(consoles: &[String], index: usize) -> String {
    match consoles {
        [_] => artifacts::CONSOLE_LOG.to_owned(),
        _ => format!("console-{}.log", consoles[index]),
    }
}

/// What starting the processes needs besides the files.
pub struct Start<'a> {
    pub qemu: &'a Path,
    pub scenario: &'a Scenario,
    /// Appended to every QEMU command line.
    pub extra_args: &'a [String],
    pub run_dir: &'a Path,
    /// The hypervisor's per-VM tags on the one process, if it tags.
    pub tagged: &'a [String],
    pub emitter: &'a Emitter,
}

/// Starts one QEMU process per entry of `files`, in order, and writes their
/// command lines to `qemu-cmdline.txt`.
pub fn spawn_all(start: &Start<'_>, files: &[BootFiles]) -> Result<Vec<QemuProcess>> {
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        match try_spawn_all(start, files)? {
            Ok(processes) => return Ok(processes),
            Err(why) => last_error = Some(why),
        }
    }
    bail!(
        "{} after {PORT_ATTEMPTS} attempts with different ports",
        last_error.unwrap_or_default()
    )
}

/// One attempt: `Ok(Err(why))` when a listener did not come up (another
/// program may have taken its port), an error when the lab cannot go on.
fn try_spawn_all(
    start: &Start<'_>,
    files: &[BootFiles],
) -> Result<std::result::Result<Vec<QemuProcess>, String>> {
    let consoles = machine_consoles(start.scenario);
    let ports = pick_ports(files)?;
    let mut commands: Vec<QemuCommand> = Vec::new();
    let mut processes: Vec<QemuProcess> = Vec::new();
    // (port, index of the process that listens on it)
    let mut listening: Vec<(u16, usize)> = Vec::new();
    for (index, files) in files.iter().enumerate() {
        let mut files = files.clone();
        for port in &mut files.net {
            port.port = ports.get(&port.switch).copied();
        }
        for port in files.net.iter().filter(|p| !p.listen) {
            let number = port.port.context("a switch without a port")?;
            let Some(&(_, listener)) = listening.iter().find(|(p, _)| *p == number) else {
                bail!(
                    "switch {}: VM {} connects before any VM listens",
                    port.switch,
                    consoles[index]
                );
            };
            if let Err(why) = wait_listening(number, &mut processes[listener]) {
                return Ok(Err(format!("{}: {why}", consoles[listener])));
            }
        }
        let mut command = qemu_command_of(start.qemu, start.scenario, index, &files);
        command
            .args
            .extend(start.extra_args.iter().cloned().map(QemuArg::Text));
        commands.push(command.clone());
        write_command_lines(start.run_dir, &consoles, &commands)?;
        let log_path = start.run_dir.join(console_log_name(&consoles, index));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let routes = Consoles::new(&consoles[index], start.tagged);
        let process =
            QemuProcess::spawn(&command, start.run_dir, log, routes, start.emitter.clone())?;
        start.emitter.emit(EventKind::QemuStarted {
            command: command.shell_line(),
            pid: process.pid().map(|pid| pid.as_raw()),
        });
        listening.extend(
            files
                .net
                .iter()
                .filter(|p| p.listen)
                .filter_map(|p| p.port)
                .map(|port| (port, index)),
        );
        processes.push(process);
    }
    Ok(Ok(processes))
}

/// A free TCP port on 127.0.0.1 for every switch a process's interfaces
/// are on. The lab binds port 0 and lets the kernel choose, then frees the
/// port for QEMU; should another program take it first, the listening QEMU
/// fails and [`spawn_all`] tries new ports.
fn pick_ports(files: &[BootFiles]) -> Result<BTreeMap<String, u16>> {
    let mut ports = BTreeMap::new();
    let mut held = Vec::new();
    for port in files.iter().flat_map(|f| &f.net) {
        if ports.contains_key(&port.switch) {
            continue;
        }
        // Held until all are chosen, so two switches never get one port.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("finding a free TCP port on 127.0.0.1")?;
        let number = listener.local_addr()?.port();
        ports.insert(port.switch.clone(), number);
        held.push(listener);
    }
    Ok(ports)
}

/// Waits until something listens on 127.0.0.1:`port`, unless `listener`
/// (the QEMU that should) exits first or the wait runs out.
fn wait_listening(port: u16, listener: &mut QemuProcess) -> std::result::Result<(), String> {
    let deadline = Instant::now() + LISTEN_WAIT;
    loop {
        if is_listening(port) {
            return Ok(());
        }
        if listener.has_exited() {
            return Err(format!(
                "QEMU exited instead of listening on 127.0.0.1:{port}"
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "QEMU did not listen on 127.0.0.1:{port} within {}s",
                LISTEN_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a TCP socket listens on `port` of 127.0.0.1 or of every address
/// (`/proc/net/tcp`, state 0A).
fn is_listening(port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    listening_in(&table, port)
}

fn listening_in(table: &str, port: u16) -> bool {
    let wanted = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3 && wanted.iter().any(|w| w == fields[1]) && fields[3] == "0A"
    })
}

/// `qemu-cmdline.txt`: the one command, or each VM's under a comment, in
/// the order the lab starts them.
fn write_command_lines(dir: &Path, consoles: &[String], commands: &[QemuCommand]) -> Result<()> {
    let text = match commands {
        [one] if consoles.len() == 1 => one.shell_line() + "\n",
        _ => commands
            .iter()
            .zip(consoles)
            .map(|(command, vm)| format!("# {vm}\n{}\n", command.shell_line()))
            .collect(),
    };
    let path = dir.join(artifacts::QEMU_CMDLINE);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_found_in_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
            1: 0100007F:1F91 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n";
        assert!(listening_in(table, 0x1F90));
        assert!(!listening_in(table, 0x1F91), "established, not listening");
        assert!(!listening_in(table, 80));
    }

    #[test]
    fn the_lab_sees_its_own_listener() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        assert!(is_listening(listener.local_addr().unwrap().port()));
    }
}
