//! Which of the vCPUs placed on a physical CPU runs next, and when the
//! CPU's EL2 timer must fire: the time slicing of `run::run_cpu` as plain
//! logic, host-tested. With one vCPU the CPU is simply its own; with
//! several they take turns round robin, a turn (slice) lasting from when
//! the vCPU got the CPU until the slice ends, it yields (WFE, a blocking
//! WFI) or it cannot run any more. The run loop does the arch calls at the
//! edges: loading the vCPU picked, arming the timer, entering the guest.

use alloc::vec::Vec;

use super::Vcpu;

/// One vCPU placed on this CPU.
pub struct Slot {
    /// Its index in the VM.
    pub index: usize,
    /// Started (PSCI) and not turned off.
    pub vcpu: Option<Vcpu>,
    /// Waiting in WFI for an interrupt.
    pub blocked: bool,
}

impl Slot {
    fn runnable(&self) -> bool {
        self.vcpu.is_some() && !self.blocked
    }
}

/// The vCPUs of one physical CPU and whose turn it is.
pub struct Schedule {
    pub slots: Vec<Slot>,
    /// The slot that ran last.
    current: usize,
    /// The running vCPU gives up the CPU at the next pick.
    yield_pending: bool,
    /// When the current slot's turn began.
    slice_start: u64,
    /// How long a turn lasts when others wait, in counter ticks.
    slice_ticks: u64,
}

impl Schedule {
    /// The vCPUs `indices` (none started yet), taking turns of
    /// `slice_ticks` counter ticks.
    pub fn new(indices: &[usize], slice_ticks: u64) -> Self {
        Schedule {
            slots: indices
                .iter()
                .map(|&index| Slot {
                    index,
                    vcpu: None,
                    blocked: false,
                })
                .collect(),
            current: 0,
            yield_pending: true,
            slice_start: 0,
            slice_ticks: slice_ticks.max(1),
        }
    }

    /// Whether several vCPUs share the CPU (and WFI/WFE must trap).
    pub fn shared(&self) -> bool {
        self.slots.len() > 1
    }

    /// The vCPUs placed here, as a mask of VM indices.
    pub fn own_mask(&self) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.index < 64)
            .fold(0, |mask, s| mask | (1 << s.index))
    }

    /// Ends the running vCPU's turn at the next [`Schedule::pick`]: its
    /// slice ended, it waits in WFI or it yielded with WFE.
    pub fn yield_cpu(&mut self) {
        self.yield_pending = true;
    }

    /// The slot to run now: the one that ran last keeps the CPU unless it
    /// yielded or cannot run; otherwise the next runnable slot after it
    /// (round robin), whose turn starts at `now`. `None`: nothing can run,
    /// the CPU idles.
    pub fn pick(&mut self, now: u64) -> Option<usize> {
        let keep = !self.yield_pending && self.slots.get(self.current).is_some_and(Slot::runnable);
        self.yield_pending = false;
        if keep {
            return Some(self.current);
        }
        let n = self.slots.len();
        let next = (1..=n)
            .map(|k| (self.current + k) % n)
            .find(|&i| self.slots[i].runnable())?;
        self.current = next;
        self.slice_start = now;
        Some(next)
    }

    /// When the EL2 timer must fire while slot `running` runs: the end of
    /// its turn if another slot waits for the CPU, `also` (the RTC alarm),
    /// and the timers of the slots not loaded, whichever comes first.
    pub fn deadline(&self, running: usize, also: Option<u64>, now: u64) -> Option<u64> {
        let others_wait = self
            .slots
            .iter()
            .enumerate()
            .any(|(i, s)| i != running && s.runnable());
        let slice_end = others_wait.then(|| self.slice_start.saturating_add(self.slice_ticks));
        self.timer_deadline(Some(running), earliest(slice_end, also), now)
    }

    /// The earliest of `also` and the virtual-timer deadlines still ahead
    /// of the slots other than `loaded` (whose timers run in hardware).
    pub fn timer_deadline(
        &self,
        loaded: Option<usize>,
        also: Option<u64>,
        now: u64,
    ) -> Option<u64> {
        let mut at = also;
        for (i, slot) in self.slots.iter().enumerate() {
            if loaded == Some(i) {
                continue;
            }
            // A deadline already passed is pending in the vGIC: nothing to
            // wait for.
            let deadline = slot.vcpu.as_ref().and_then(Vcpu::timer_deadline);
            at = earliest(at, deadline.filter(|d| *d > now));
        }
        at
    }
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLICE: u64 = 100;

    /// vCPUs 0..n placed on one CPU, all started.
    fn started(n: usize) -> Schedule {
        let indices: Vec<usize> = (0..n).collect();
        let mut schedule = Schedule::new(&indices, SLICE);
        for slot in &mut schedule.slots {
            slot.vcpu = Some(Vcpu::boot(slot.index, 0x4008_0000, 0));
        }
        schedule
    }

    /// Arms vCPU `slot`'s saved virtual timer (CNTV_CTL enabled, unmasked)
    /// to fire at `at`.
    fn arm_virtual_timer(schedule: &mut Schedule, slot: usize, at: u64) {
        let vcpu = schedule.slots[slot].vcpu.as_mut().unwrap();
        vcpu.regs.el1.cntv_ctl_el0 = 1;
        vcpu.regs.el1.cntv_cval_el0 = at;
    }

    #[test]
    fn one_vcpu_keeps_its_cpu_and_needs_no_slice() {
        let mut s = started(1);
        assert!(!s.shared());
        assert_eq!(s.pick(0), Some(0));
        s.yield_cpu();
        assert_eq!(s.pick(10), Some(0), "yielding to nobody");
        assert_eq!(s.deadline(0, None, 10), None);
        assert_eq!(s.deadline(0, Some(50), 10), Some(50), "the RTC alarm");
    }

    #[test]
    fn turns_go_round_robin_and_last_a_slice() {
        let mut s = started(3);
        assert_eq!(s.own_mask(), 0b111);
        assert_eq!(s.pick(0), Some(1), "the first pick starts a turn");
        assert_eq!(s.deadline(1, None, 0), Some(SLICE));
        // Exits within the turn keep the CPU, and the turn's end.
        assert_eq!(s.pick(40), Some(1));
        assert_eq!(s.deadline(1, None, 40), Some(SLICE));
        s.yield_cpu();
        assert_eq!(s.pick(SLICE), Some(2));
        assert_eq!(s.deadline(2, None, SLICE), Some(2 * SLICE));
        s.yield_cpu();
        assert_eq!(s.pick(150), Some(0), "wraps around");
    }

    #[test]
    fn blocked_and_stopped_vcpus_are_skipped_and_an_empty_cpu_idles() {
        let mut s = started(3);
        assert_eq!(s.pick(0), Some(1));
        s.slots[2].blocked = true;
        s.slots[0].vcpu = None;
        assert_eq!(s.deadline(1, None, 0), None, "nobody waits for the CPU");
        s.yield_cpu();
        assert_eq!(s.pick(10), Some(1), "the only runnable one again");
        s.slots[1].blocked = true;
        assert_eq!(s.pick(20), None);
        s.slots[2].blocked = false;
        assert_eq!(s.pick(30), Some(2), "woken by an interrupt");
    }

    #[test]
    fn the_timer_also_watches_the_deadlines_of_vcpus_not_loaded() {
        let mut s = started(2);
        arm_virtual_timer(&mut s, 0, 70);
        arm_virtual_timer(&mut s, 1, 30);
        assert_eq!(s.pick(0), Some(1));
        // vCPU 1 runs with its timer in hardware; vCPU 0's is watched.
        assert_eq!(s.deadline(1, None, 0), Some(70));
        assert_eq!(s.timer_deadline(None, None, 0), Some(30), "idle: both");
        assert_eq!(
            s.timer_deadline(None, None, 40),
            Some(70),
            "a deadline already passed is pending, not waited for"
        );
        assert_eq!(s.timer_deadline(None, Some(20), 0), Some(20));
    }
}
