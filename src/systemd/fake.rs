//! A recording [`ServiceManager`] for tests (unit tests in any module and integration tests).
//!
//! Every `stop`/`start` request is recorded in order as `("stop"|"start", unit)`, whatever its
//! outcome (missing and masked units and injected faults included), so a test can assert the
//! exact sequence the transaction asked for. Units not configured are missing (`not-found`).
//!
//! ```
//! use std::time::Duration;
//! use k8s_nokmem::systemd::fake::{FakeSystemd, Fault, Op};
//! use k8s_nokmem::systemd::{ServiceAction, ServiceManager};
//!
//! let sd = FakeSystemd::with_active(&["kubelet.service", "docker.service"])
//!     .with_fault_times(Op::Start, "kubelet.service", Fault::failed("exit-code"), 1);
//! let t = Duration::from_secs(5);
//! sd.stop("kubelet.service", t).unwrap();
//! assert!(sd.start("kubelet.service", t).is_err()); // the injected failure, once
//! assert!(matches!(sd.start("kubelet.service", t), Ok(ServiceAction::Done { .. })));
//! assert_eq!(sd.state("kubelet.service").unwrap().active_state, "active");
//! assert_eq!(
//!     sd.calls(),
//!     vec![("stop", "kubelet.service".to_string()),
//!          ("start", "kubelet.service".to_string()),
//!          ("start", "kubelet.service".to_string())]
//! );
//! ```

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::settle::{went_down, Started};
use super::{ServiceAction, ServiceManager, SystemdError, UnitState};

/// The two operations the fake records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Stop,
    Start,
}

impl Op {
    /// `"stop"` or `"start"`, as recorded in [`FakeSystemd::calls`].
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Stop => "stop",
            Op::Start => "start",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Op::Stop => "StopUnit",
            Op::Start => "StartUnit",
        }
    }
}

/// A failure to inject into a `stop`/`start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The job ends with `job_result` (e.g. `failed`); a failed start leaves the unit
    /// `failed/failed` with `Result=unit_result`, a failed stop leaves it as it was.
    JobFailed {
        job_result: String,
        unit_result: String,
    },
    /// The job does not finish within the timeout (a start leaves the unit `activating`).
    Timeout,
    /// The D-Bus call itself fails (as when the bus or systemd goes away).
    Bus,
}

impl Fault {
    /// A job that ends `failed` with the unit's `Result=unit_result` (`exit-code`, `signal`, ...).
    pub fn failed(unit_result: &str) -> Self {
        Fault::JobFailed {
            job_result: "failed".to_string(),
            unit_result: unit_result.to_string(),
        }
    }
}

type Hook = Box<dyn Fn(Op, &str) -> Option<Fault> + Send>;

struct Rule {
    op: Op,
    unit: String,
    fault: Fault,
    /// `None`: every time.
    remaining: Option<usize>,
}

#[derive(Default)]
struct Inner {
    units: BTreeMap<String, UnitState>,
    calls: Vec<(&'static str, String)>,
    rules: Vec<Rule>,
    hook: Option<Hook>,
    no_bus: bool,
    /// Units whose process exits during the settle window after every start.
    dies: Vec<String>,
    /// Fake clock for `ActiveEnterTimestamp`, advanced by every start that activates a unit.
    clock_usec: u64,
    next_pid: u32,
    /// Settle with the real watch ([`crate::systemd::settle::watch`]: the real window and
    /// kubelet's healthz on 127.0.0.1:10248) instead of taking no time.
    real_settle: bool,
}

/// A recording, configurable stand-in for systemd. Interior mutability, so it is shared by
/// `&` like the real client (and `Sync`).
#[derive(Default)]
pub struct FakeSystemd {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for FakeSystemd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("FakeSystemd")
            .field("units", &inner.units)
            .field("calls", &inner.calls)
            .field("no_bus", &inner.no_bus)
            .finish_non_exhaustive()
    }
}

impl FakeSystemd {
    /// No units at all: every unit is missing (`not-found`).
    pub fn new() -> Self {
        Self::default()
    }

    /// These units loaded and `active/running`.
    pub fn with_active(units: &[&str]) -> Self {
        units
            .iter()
            .fold(Self::new(), |sd, unit| sd.with_state(active_state(unit, 0)))
    }

    /// Add or replace one unit with exactly this state (its `unit` field names it).
    pub fn with_state(self, state: UnitState) -> Self {
        self.set_state(state);
        self
    }

    /// A loaded unit that is `inactive/dead` (it starts normally).
    pub fn with_inactive(self, unit: &str) -> Self {
        self.with_state(UnitState {
            unit: unit.to_string(),
            load_state: "loaded".to_string(),
            active_state: "inactive".to_string(),
            sub_state: "dead".to_string(),
            result: "success".to_string(),
            active_enter_usec: 0,
            main_pid: 0,
        })
    }

    /// A masked unit (left alone by `stop`/`start`).
    pub fn with_masked(self, unit: &str) -> Self {
        self.with_state(UnitState {
            unit: unit.to_string(),
            load_state: "masked".to_string(),
            active_state: "inactive".to_string(),
            sub_state: "dead".to_string(),
            ..UnitState::default()
        })
    }

    /// Every `op` on `unit` fails with `fault`.
    pub fn with_fault(self, op: Op, unit: &str, fault: Fault) -> Self {
        self.add_fault(op, unit, fault, None);
        self
    }

    /// The next `times` `op`s on `unit` fail with `fault`, later ones succeed.
    pub fn with_fault_times(self, op: Op, unit: &str, fault: Fault, times: usize) -> Self {
        self.add_fault(op, unit, fault, Some(times));
        self
    }

    /// Decide faults with a closure, consulted before the configured faults (e.g. fail the
    /// start of a unit while a file holds the new binary). `None` lets the call go on.
    pub fn with_hook(self, hook: impl Fn(Op, &str) -> Option<Fault> + Send + 'static) -> Self {
        self.lock().hook = Some(Box::new(hook));
        self
    }

    /// `unit` starts fine, then its process exits during the settle window (as a kubelet
    /// with a bad flag, under `Restart=always`): [`ServiceManager::settle`] finds it
    /// `activating/auto-restart`. The settle watch takes no time in the fake.
    pub fn with_dies_after_start(self, unit: &str) -> Self {
        self.lock().dies.push(unit.to_string());
        self
    }

    /// The settle step runs the real watch over this fake's states: it takes the settle
    /// window and asks kubelet's healthz endpoint.
    pub fn with_real_settle(self) -> Self {
        self.lock().real_settle = true;
        self
    }

    /// Every call fails as if the system bus could not be reached.
    pub fn with_no_bus(self) -> Self {
        self.lock().no_bus = true;
        self
    }

    /// Add or replace a unit's state while a test runs.
    pub fn set_state(&self, state: UnitState) {
        self.lock().units.insert(state.unit.clone(), state);
    }

    /// Inject a fault while a test runs (`times: None` = every time).
    pub fn add_fault(&self, op: Op, unit: &str, fault: Fault, times: Option<usize>) {
        self.lock().rules.push(Rule {
            op,
            unit: unit.to_string(),
            fault,
            remaining: times,
        });
    }

    /// Drop every injected fault and the hook.
    pub fn clear_faults(&self) {
        let mut inner = self.lock();
        inner.rules.clear();
        inner.hook = None;
    }

    /// The `stop`/`start` requests so far, in order.
    pub fn calls(&self) -> Vec<(&'static str, String)> {
        self.lock().calls.clone()
    }

    /// The requests as `"stop kubelet.service"` lines, handy in assertion messages.
    pub fn call_lines(&self) -> Vec<String> {
        self.lock()
            .calls
            .iter()
            .map(|(op, unit)| format!("{op} {unit}"))
            .collect()
    }

    /// The recorded stop and start requests (`stop kubelet.service`), in order: what a
    /// swap that restarts nothing must leave empty.
    pub fn stops_and_starts(&self) -> Vec<String> {
        self.call_lines()
            .into_iter()
            .filter(|l| l.starts_with("stop ") || l.starts_with("start "))
            .collect()
    }

    /// Forget the recorded requests (e.g. between the two runs of an idempotence test).
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// A unit's state without going through the trait (missing: `not-found`).
    pub fn unit_state(&self, unit: &str) -> UnitState {
        let inner = self.lock();
        inner
            .units
            .get(unit)
            .cloned()
            .unwrap_or_else(|| not_found(unit))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // a test that panicked while holding the lock must not hide the state from others
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn act(&self, op: Op, unit: &str, timeout: Duration) -> Result<ServiceAction, SystemdError> {
        let mut inner = self.lock();
        inner.calls.push((op.as_str(), unit.to_string()));
        if inner.no_bus {
            return Err(SystemdError::Connect(no_bus_error()));
        }
        let load_state = inner
            .units
            .get(unit)
            .map(|s| s.load_state.clone())
            .unwrap_or_default();
        match load_state.as_str() {
            "" | "not-found" => return Ok(ServiceAction::Missing),
            "masked" => return Ok(ServiceAction::Masked),
            _ => {}
        }
        if let Some(fault) = inner.take_fault(op, unit) {
            return Err(inner.apply_fault(op, unit, fault, timeout));
        }
        inner.clock_usec += 1_000_000;
        let now = inner.clock_usec;
        inner.next_pid += 1;
        let pid = 1000 + inner.next_pid;
        let Some(state) = inner.units.get_mut(unit) else {
            return Ok(ServiceAction::Missing);
        };
        match op {
            // starting an active unit is a no-op job: no restart, timestamp unchanged
            Op::Start if state.active_state == "active" => {}
            Op::Start => {
                state.active_state = "active".to_string();
                state.sub_state = "running".to_string();
                state.result = "success".to_string();
                state.active_enter_usec = now;
                state.main_pid = pid;
            }
            Op::Stop => {
                state.active_state = "inactive".to_string();
                state.sub_state = "dead".to_string();
                state.main_pid = 0;
            }
        }
        Ok(ServiceAction::Done {
            job_result: "done".to_string(),
        })
    }
}

impl Inner {
    fn take_fault(&mut self, op: Op, unit: &str) -> Option<Fault> {
        if let Some(fault) = self.hook.as_ref().and_then(|hook| hook(op, unit)) {
            return Some(fault);
        }
        let rule = self
            .rules
            .iter_mut()
            .find(|r| r.op == op && r.unit == unit && r.remaining != Some(0))?;
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
        }
        Some(rule.fault.clone())
    }

    fn apply_fault(&mut self, op: Op, unit: &str, fault: Fault, timeout: Duration) -> SystemdError {
        let verb = op.as_str();
        let state = self
            .units
            .entry(unit.to_string())
            .or_insert_with(|| not_found(unit));
        match fault {
            Fault::JobFailed {
                job_result,
                unit_result,
            } => {
                if op == Op::Start {
                    state.active_state = "failed".to_string();
                    state.sub_state = "failed".to_string();
                    state.result = unit_result.clone();
                    state.main_pid = 0;
                }
                SystemdError::JobFailed {
                    verb,
                    unit: unit.to_string(),
                    job_result,
                    active_state: state.active_state.clone(),
                    sub_state: state.sub_state.clone(),
                    unit_result: state.result.clone(),
                }
            }
            Fault::Timeout => {
                let (active, sub) = match op {
                    Op::Start => ("activating", "start"),
                    Op::Stop => ("deactivating", "stop-sigterm"),
                };
                state.active_state = active.to_string();
                state.sub_state = sub.to_string();
                SystemdError::Timeout {
                    verb,
                    unit: unit.to_string(),
                    timeout,
                }
            }
            Fault::Bus => SystemdError::Call {
                method: op.method(),
                unit: unit.to_string(),
                source: zbus::Error::Failure("fake: injected D-Bus failure".to_string()),
            },
        }
    }
}

impl ServiceManager for FakeSystemd {
    fn stop(&self, unit: &str, timeout: Duration) -> Result<ServiceAction, SystemdError> {
        self.act(Op::Stop, unit, timeout)
    }

    fn start(&self, unit: &str, timeout: Duration) -> Result<ServiceAction, SystemdError> {
        self.act(Op::Start, unit, timeout)
    }

    fn state(&self, unit: &str) -> Result<UnitState, SystemdError> {
        if self.lock().no_bus {
            return Err(SystemdError::Connect(no_bus_error()));
        }
        Ok(self.unit_state(unit))
    }

    fn settle(&self, started: &[Started], window: Duration) -> Result<(), SystemdError> {
        let mut inner = self.lock();
        if inner.no_bus {
            return Err(SystemdError::Connect(no_bus_error()));
        }
        if inner.real_settle {
            drop(inner);
            return crate::systemd::settle::watch(self, started, window);
        }
        for s in started {
            let unit = &s.state.unit;
            if inner.dies.contains(unit) {
                if let Some(state) = inner.units.get_mut(unit) {
                    state.active_state = "activating".to_string();
                    state.sub_state = "auto-restart".to_string();
                    state.result = "exit-code".to_string();
                    state.main_pid = 0;
                }
            }
            let now = inner
                .units
                .get(unit)
                .cloned()
                .unwrap_or_else(|| not_found(unit));
            if let Some(why) = went_down(&s.state, &now) {
                return Err(SystemdError::Settle {
                    unit: unit.clone(),
                    after_ms: 0,
                    window,
                    why,
                    active_state: now.active_state,
                    sub_state: now.sub_state,
                });
            }
        }
        Ok(())
    }
}

/// Another process (nobody's when this runs as root) answering every HTTP request with
/// `500` on `bind` (`127.0.0.1:0`: a free port); killed on drop.
pub struct Stranger {
    pub child: std::process::Child,
    /// Where it listens (`127.0.0.1:PORT`).
    pub addr: String,
}

impl Stranger {
    pub fn serve_500(bind: &str) -> Stranger {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let (host, port) = bind.rsplit_once(':').expect("HOST:PORT");
        let script = format!(
            "import socket\n\
             s = socket.socket()\n\
             s.bind(('{host}', {port}))\n\
             s.listen(16)\n\
             print(s.getsockname()[1], flush=True)\n\
             while True:\n    c, _ = s.accept()\n    r = b''\n    \
             while b'\\r\\n\\r\\n' not in r:\n        d = c.recv(4096)\n        \
             r += d\n        \
             if not d: break\n    \
             c.sendall(b'HTTP/1.1 500 Internal Server Error\\r\\n\\r\\n[-]not kubelet')\n    c.close()\n"
        );
        let mut cmd = std::process::Command::new("python3");
        cmd.args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null());
        if nix::unistd::geteuid().is_root() {
            cmd.uid(65534).gid(65534);
        }
        let mut child = cmd
            .spawn()
            .expect("failed to start python3 (scripts/install-deps.sh installs it)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read the listener's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the python3 listener on {bind} said '{line}'"));
        Stranger {
            child,
            addr: format!("{host}:{port}"),
        }
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `f` in a thread of its own network namespace with only `lo` up, so that a test can
/// use fixed ports (kubelet's 127.0.0.1:10248) without meeting the machine's. Needs root.
pub fn in_private_network<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root for a network namespace of its own: run it as root (`sudo -E cargo test`)"
    );
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare(2) on this thread only (a network namespace may be
                // unshared by one thread of a multithreaded process)
                let rc = unsafe { nix::libc::unshare(nix::libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "unshare(CLONE_NEWNET): {}",
                    std::io::Error::last_os_error()
                );
                let up = std::process::Command::new("ip")
                    .args(["link", "set", "lo", "up"])
                    .status()
                    .expect("failed to run `ip` (package iproute2)");
                assert!(up.success(), "`ip link set lo up`: {up}");
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

fn active_state(unit: &str, since_usec: u64) -> UnitState {
    UnitState {
        unit: unit.to_string(),
        load_state: "loaded".to_string(),
        active_state: "active".to_string(),
        sub_state: "running".to_string(),
        result: "success".to_string(),
        active_enter_usec: since_usec,
        main_pid: 1,
    }
}

fn not_found(unit: &str) -> UnitState {
    UnitState {
        unit: unit.to_string(),
        load_state: "not-found".to_string(),
        active_state: "inactive".to_string(),
        sub_state: "dead".to_string(),
        ..UnitState::default()
    }
}

fn no_bus_error() -> zbus::Error {
    zbus::Error::Address("fake: no system bus".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn records_every_request_in_order() {
        let sd = FakeSystemd::with_active(&["kubelet.service", "docker.service"])
            .with_masked("masked.service");
        for unit in [
            "kubelet.service",
            "docker.service",
            "gone.service",
            "masked.service",
        ] {
            sd.stop(unit, T).unwrap();
        }
        sd.start("docker.service", T).unwrap();
        assert_eq!(
            sd.call_lines(),
            vec![
                "stop kubelet.service",
                "stop docker.service",
                "stop gone.service",
                "stop masked.service",
                "start docker.service"
            ]
        );
    }

    #[test]
    fn missing_and_masked_units_are_reported_not_touched() {
        let sd = FakeSystemd::new().with_masked("m.service");
        assert_eq!(sd.stop("x.service", T).unwrap(), ServiceAction::Missing);
        assert_eq!(sd.start("m.service", T).unwrap(), ServiceAction::Masked);
        assert_eq!(sd.state("x.service").unwrap().load_state, "not-found");
        assert_eq!(sd.state("m.service").unwrap().active_state, "inactive");
    }

    #[test]
    fn stop_then_start_restarts_and_moves_the_timestamp() {
        let sd = FakeSystemd::with_active(&["k.service"]);
        let before = sd.unit_state("k.service").active_enter_usec;
        sd.stop("k.service", T).unwrap();
        assert_eq!(sd.unit_state("k.service").active_state, "inactive");
        sd.start("k.service", T).unwrap();
        let after = sd.unit_state("k.service");
        assert_eq!(after.active_state, "active");
        assert!(after.active_enter_usec > before);
        // starting an active unit does not restart it
        sd.start("k.service", T).unwrap();
        assert_eq!(sd.unit_state("k.service"), after);
    }

    #[test]
    fn injected_start_failure_leaves_the_unit_failed_and_names_it() {
        let sd = FakeSystemd::new()
            .with_inactive("k.service")
            .with_fault_times(Op::Start, "k.service", Fault::failed("exit-code"), 1);
        let err = sd.start("k.service", T).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("'k.service'") && msg.contains("'failed'"),
            "{msg}"
        );
        assert!(msg.contains("Result=exit-code") && msg.contains("journalctl -u k.service"));
        assert_eq!(sd.unit_state("k.service").active_state, "failed");
        // only once
        sd.start("k.service", T).unwrap();
        assert_eq!(sd.unit_state("k.service").active_state, "active");
    }

    #[test]
    fn timeout_bus_and_hook_faults() {
        let sd = FakeSystemd::with_active(&["a.service", "b.service"])
            .with_fault(Op::Stop, "a.service", Fault::Timeout)
            .with_hook(|op, unit| (op == Op::Start && unit == "b.service").then_some(Fault::Bus));
        assert!(matches!(
            sd.stop("a.service", T),
            Err(SystemdError::Timeout { verb: "stop", .. })
        ));
        assert_eq!(sd.unit_state("a.service").active_state, "deactivating");
        let err = sd.start("b.service", T).unwrap_err();
        assert!(matches!(
            err,
            SystemdError::Call {
                method: "StartUnit",
                ..
            }
        ));
        sd.clear_faults();
        sd.start("b.service", T).unwrap();
    }

    #[test]
    fn no_bus_fails_every_call() {
        let sd = FakeSystemd::with_active(&["a.service"]).with_no_bus();
        assert!(matches!(
            sd.stop("a.service", T),
            Err(SystemdError::Connect(_))
        ));
        assert!(matches!(
            sd.state("a.service"),
            Err(SystemdError::Connect(_))
        ));
        assert_eq!(sd.calls(), vec![("stop", "a.service".to_string())]);
    }
}
