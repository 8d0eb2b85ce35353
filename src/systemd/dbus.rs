//! The real [`ServiceManager`]: systemd's D-Bus API on the system bus, with zbus's blocking
//! connection (`$DBUS_SYSTEM_BUS_ADDRESS` honoured). One connection per process, subscribed
//! once. Only members that systemd 229 (Ubuntu 16.04) has are declared.
//!
//! A stop or start: LoadUnit (not-found -> [`ServiceAction::Missing`], masked ->
//! [`ServiceAction::Masked`], nothing called), open the JobRemoved stream, StopUnit/StartUnit
//! with mode `replace`, wait for the JobRemoved of the returned job path (others' jobs are
//! ignored) up to the timeout, then read the unit's state. Only job results `done` and
//! `skipped` succeed. Only systemd's JobRemoved count: the match rule names
//! `sender='org.freedesktop.systemd1'` and its path, and a signal whose sender is not the
//! unique name owning that name (GetNameOwner) is dropped: any local user can send a
//! JobRemoved "done" for our job path, broadcast or straight to us.
//!
//! After a start whose job is `done` the unit must be `active` (a `oneshot` without
//! `RemainAfterExit` may be `inactive` again, with `Result=success`). Whether it stays up is
//! the settle watch's business (`settle.rs`), for all started units at once.
//!
//! A job that times out is left queued: the next stop or start of that unit (mode
//! `replace`, e.g. the rollback's) replaces it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_lite::{Stream, StreamExt};
use log::{debug, trace};
use zbus::blocking::Connection;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

use super::{ServiceAction, ServiceManager, SystemdError, UnitState};

const JOB_MODE: &str = "replace";
/// Every method call's reply, as libdbus's default: a hung systemd must not hang dpkg.
/// (Job waits have their own timeout, from the config.)
const METHOD_TIMEOUT: Duration = Duration::from_secs(25);
/// Messages zbus queues per stream before its reader waits (default 64): while we wait for
/// StopUnit's reply, every JobRemoved on the system lands in our stream, and a full queue
/// would hold the reply back until the method timeout.
const MAX_QUEUED: usize = 4096;
const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
/// systemd's bus name; its signals count only from the unique name that owns it.
const SYSTEMD_NAME: &str = "org.freedesktop.systemd1";
/// How often, at most, the owner of [`SYSTEMD_NAME`] is asked again when a JobRemoved
/// comes from another name.
const OWNER_RECHECK: Duration = Duration::from_secs(1);
const MANAGER_INTERFACE: &str = "org.freedesktop.systemd1.Manager";

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_enter_timestamp(&self) -> zbus::Result<u64>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait Service {
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    /// The running main process (0: none); ExecMainPID would keep the last one after exit.
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    #[zbus(property, name = "Type")]
    fn service_type(&self) -> zbus::Result<String>;
}

/// The two job kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Stop,
    Start,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Stop => "stop",
            Verb::Start => "start",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Verb::Stop => "StopUnit",
            Verb::Start => "StartUnit",
        }
    }
}

/// One JobRemoved signal, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobEvent {
    pub id: u32,
    pub job: String,
    pub unit: String,
    pub result: String,
}

/// How waiting for a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobWait {
    Removed(JobEvent),
    TimedOut,
    /// The signal stream ended (the bus connection closed).
    StreamEnded,
}

/// Whether a JobRemoved result means the job did what was asked.
pub(crate) fn job_succeeded(result: &str) -> bool {
    matches!(result, "done" | "skipped")
}

/// Whether a unit is up after its start job ended `done`: `active`, or for a oneshot service
/// (no RemainAfterExit) back to `inactive` with `Result=success`.
pub(crate) fn started_ok(state: &UnitState, service_type: &str) -> bool {
    match state.active_state.as_str() {
        "active" => true,
        "inactive" => service_type == "oneshot" && state.result == "success",
        _ => false,
    }
}

/// Wait for the JobRemoved of `job`; signals for other jobs (other clients', other units')
/// are skipped. The stream must have been opened before the job was queued.
pub(crate) async fn wait_for_job<S>(events: S, job: &str, timeout: Duration) -> JobWait
where
    S: Stream<Item = JobEvent> + Unpin,
{
    let mut events = events;
    let found = async {
        while let Some(event) = events.next().await {
            if event.job == job {
                return JobWait::Removed(event);
            }
            trace!(
                "D-Bus: ignoring JobRemoved of job {} ('{}'), waiting for {job}",
                event.job,
                event.unit
            );
        }
        JobWait::StreamEnded
    };
    let timer = async {
        async_io::Timer::after(timeout).await;
        JobWait::TimedOut
    };
    futures_lite::future::or(found, timer).await
}

/// The unique name that owns `org.freedesktop.systemd1`, asked of the bus (the only name
/// whose signals count), asked again at most every [`OWNER_RECHECK`] when a signal comes
/// from another name (systemd reconnects to the bus after `daemon-reexec`).
struct SystemdOwner<'a> {
    bus: &'a zbus::fdo::DBusProxy<'a>,
    owner: std::cell::RefCell<(zbus::names::OwnedUniqueName, Instant)>,
}

impl<'a> SystemdOwner<'a> {
    async fn lookup(bus: &'a zbus::fdo::DBusProxy<'a>) -> zbus::Result<SystemdOwner<'a>> {
        let owner = Self::ask(bus).await?;
        trace!("D-Bus: {SYSTEMD_NAME} is {owner}");
        Ok(SystemdOwner {
            bus,
            owner: std::cell::RefCell::new((owner, Instant::now())),
        })
    }

    async fn ask(bus: &zbus::fdo::DBusProxy<'_>) -> zbus::Result<zbus::names::OwnedUniqueName> {
        let name = zbus::names::BusName::try_from(SYSTEMD_NAME)?;
        Ok(bus.get_name_owner(name).await?)
    }

    /// Whether systemd sent `msg`.
    async fn sent(&self, msg: &zbus::Message) -> bool {
        let header = msg.header();
        let Some(sender) = header.sender() else {
            return false;
        };
        if *sender == *self.owner.borrow().0 {
            return true;
        }
        let due = self.owner.borrow().1.elapsed() >= OWNER_RECHECK;
        if due {
            if let Ok(now) = Self::ask(self.bus).await {
                *self.owner.borrow_mut() = (now, Instant::now());
            }
        }
        let owner = self.owner.borrow();
        if *sender == *owner.0 {
            return true;
        }
        debug!(
            "D-Bus: ignoring a JobRemoved signal from '{sender}': {SYSTEMD_NAME} is '{}'",
            owner.0
        );
        false
    }
}

/// A JobRemoved signal's arguments, or `None` (logged) for anything else.
fn job_event(msg: &zbus::Message) -> Option<JobEvent> {
    let args = JobRemoved::from_message(msg.clone())
        .ok_or_else(|| zbus::Error::Failure("not a JobRemoved signal".into()))
        .and_then(|signal| {
            signal.args().map(|a| JobEvent {
                id: a.id,
                job: a.job.to_string(),
                unit: a.unit.to_string(),
                result: a.result.to_string(),
            })
        });
    match args {
        Ok(event) => {
            trace!(
                "D-Bus <- JobRemoved(id={}, job={}, unit='{}', result='{}')",
                event.id,
                event.job,
                event.unit,
                event.result
            );
            Some(event)
        }
        Err(e) => {
            trace!(
                "D-Bus <- JobRemoved with unexpected arguments: {}",
                crate::notes::error_chain(&e)
            );
            None
        }
    }
}

fn connection() -> Result<Connection, SystemdError> {
    static CONN: OnceLock<Connection> = OnceLock::new();
    if let Some(conn) = CONN.get() {
        return Ok(conn.clone());
    }
    let address = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .unwrap_or_else(|_| "unix:path=/var/run/dbus/system_bus_socket (default)".to_string());
    debug!("connecting to the system bus at {address}");
    let conn = open(zbus::blocking::connection::Builder::system().map_err(SystemdError::Connect)?)?;
    Ok(CONN.get_or_init(|| conn).clone())
}

/// Connect with `builder` and Subscribe() to job signals.
fn open(builder: zbus::blocking::connection::Builder<'_>) -> Result<Connection, SystemdError> {
    let conn = builder
        .method_timeout(METHOD_TIMEOUT)
        .max_queued(MAX_QUEUED)
        .build()
        .map_err(SystemdError::Connect)?;
    let manager = ManagerProxyBlocking::builder(&conn)
        .cache_properties(CacheProperties::No)
        .build()
        .map_err(SystemdError::Connect)?;
    trace!("D-Bus -> Subscribe()");
    match manager.subscribe() {
        Ok(()) => trace!("D-Bus <- Subscribe: ok"),
        // systemd < 233 answers a second Subscribe of the same client with an error
        Err(zbus::Error::MethodError(name, _, _)) if name.ends_with("AlreadySubscribed") => {}
        Err(e) => return Err(SystemdError::Connect(e)),
    }
    Ok(conn)
}

/// systemd over D-Bus. Cheap to create: every client shares the process's one connection.
#[derive(Debug, Clone)]
pub struct SystemdClient {
    conn: Connection,
    /// Each unit's state as read right after its last start job (see
    /// [`ServiceManager::started_state`]).
    started: Arc<Mutex<HashMap<String, UnitState>>>,
}

impl SystemdClient {
    /// Connect to the system bus (once per process) and Subscribe() to job signals.
    pub fn system() -> Result<Self, SystemdError> {
        Ok(SystemdClient {
            conn: connection()?,
            started: Arc::default(),
        })
    }

    fn manager(
        &self,
        unit: &str,
        method: &'static str,
    ) -> Result<ManagerProxyBlocking<'static>, SystemdError> {
        ManagerProxyBlocking::builder(&self.conn)
            .cache_properties(CacheProperties::No)
            .build()
            .map_err(|source| call_error(method, unit, source))
    }

    /// LoadUnit: the unit's object path, or `None` for NoSuchUnit.
    fn load(&self, unit: &str) -> Result<Option<OwnedObjectPath>, SystemdError> {
        let manager = self.manager(unit, "LoadUnit")?;
        trace!("D-Bus -> LoadUnit('{unit}')");
        match manager.load_unit(unit) {
            Ok(path) => {
                trace!("D-Bus <- LoadUnit: {}", path.as_str());
                Ok(Some(path))
            }
            Err(zbus::Error::MethodError(name, msg, _)) if name.as_str() == NO_SUCH_UNIT => {
                trace!("D-Bus <- LoadUnit: {name}: {}", msg.unwrap_or_default());
                Ok(None)
            }
            Err(source) => Err(call_error("LoadUnit", unit, source)),
        }
    }

    fn read_state(&self, unit: &str, path: &ObjectPath<'_>) -> Result<UnitState, SystemdError> {
        let get = |source| call_error("Get", unit, source);
        let props = UnitProxyBlocking::builder(&self.conn)
            .path(path.to_owned())
            .map_err(get)?
            .cache_properties(CacheProperties::No)
            .build()
            .map_err(get)?;
        let mut state = UnitState {
            unit: unit.to_string(),
            load_state: props.load_state().map_err(get)?,
            active_state: props.active_state().map_err(get)?,
            sub_state: props.sub_state().map_err(get)?,
            active_enter_usec: props.active_enter_timestamp().map_err(get)?,
            ..UnitState::default()
        };
        if state.load_state == "loaded" && unit.ends_with(".service") {
            let service = self.service(unit, path)?;
            state.result = service.result().map_err(get)?;
            state.main_pid = service.main_pid().map_err(get)?;
        }
        trace!(
            "D-Bus <- '{unit}': LoadState={} ActiveState={} SubState={} Result={} ActiveEnterTimestamp={} MainPID={}",
            state.load_state,
            state.active_state,
            state.sub_state,
            state.result,
            state.active_enter_usec,
            state.main_pid
        );
        Ok(state)
    }

    fn service(
        &self,
        unit: &str,
        path: &ObjectPath<'_>,
    ) -> Result<ServiceProxyBlocking<'static>, SystemdError> {
        let get = |source| call_error("Get", unit, source);
        ServiceProxyBlocking::builder(&self.conn)
            .path(path.to_owned())
            .map_err(get)?
            .cache_properties(CacheProperties::No)
            .build()
            .map_err(get)
    }

    fn service_type(&self, unit: &str, path: &ObjectPath<'_>) -> Result<String, SystemdError> {
        if !unit.ends_with(".service") {
            return Ok(String::new());
        }
        self.service(unit, path)?
            .service_type()
            .map_err(|source| call_error("Get", unit, source))
    }

    /// Queue the job with the JobRemoved stream already open and wait for it. Only
    /// systemd's signals count: the bus routes us JobRemoved sent by the owner of
    /// `org.freedesktop.systemd1` (the rule's `sender`), and each signal's sender must be
    /// that owner's unique name (GetNameOwner), since any peer can also send a signal
    /// straight to us. While the call is pending the stream is read on (a job can end
    /// before its reply is read, and a flood must not fill zbus's queue and hold the reply).
    fn run_job(&self, verb: Verb, unit: &str, timeout: Duration) -> Result<JobEvent, SystemdError> {
        let method = verb.method();
        let err = |source| call_error(method, unit, source);
        zbus::block_on(async {
            let manager = ManagerProxy::builder(self.conn.inner())
                .cache_properties(CacheProperties::No)
                .build()
                .await
                .map_err(err)?;
            let bus = zbus::fdo::DBusProxy::builder(self.conn.inner())
                .cache_properties(CacheProperties::No)
                .build()
                .await
                .map_err(err)?;
            // the match rule is in place when this returns: no JobRemoved can be missed
            let rule = zbus::MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .sender(SYSTEMD_NAME)
                .and_then(|b| b.path(MANAGER_PATH))
                .and_then(|b| b.interface(MANAGER_INTERFACE))
                .and_then(|b| b.member("JobRemoved"))
                .map_err(err)?
                .build();
            let signals =
                zbus::MessageStream::for_match_rule(rule, self.conn.inner(), Some(MAX_QUEUED))
                    .await
                    .map_err(err)?;
            let owner = SystemdOwner::lookup(&bus).await.map_err(err)?;
            let owner = &owner;
            let mut events = Box::pin(
                signals
                    .then(move |msg| async move {
                        let msg = msg.ok()?;
                        owner.sent(&msg).await.then(|| job_event(&msg)).flatten()
                    })
                    .filter_map(|event| event),
            );
            trace!("D-Bus -> {method}('{unit}', '{JOB_MODE}')");
            let call = async {
                match verb {
                    Verb::Stop => manager.stop_unit(unit, JOB_MODE).await,
                    Verb::Start => manager.start_unit(unit, JOB_MODE).await,
                }
            };
            let mut early = Vec::new();
            let job = {
                let drain = async {
                    while let Some(event) = events.next().await {
                        early.push(event);
                    }
                    std::future::pending().await
                };
                futures_lite::future::or(call, drain).await.map_err(err)?
            };
            trace!("D-Bus <- {method}: job {}", job.as_str());
            let events = futures_lite::stream::iter(early).chain(events);
            match wait_for_job(events, job.as_str(), timeout).await {
                JobWait::Removed(event) => Ok(event),
                JobWait::TimedOut => Err(SystemdError::Timeout {
                    verb: verb.as_str(),
                    unit: unit.to_string(),
                    timeout,
                }),
                JobWait::StreamEnded => Err(SystemdError::Lost {
                    verb: verb.as_str(),
                    unit: unit.to_string(),
                }),
            }
        })
    }

    fn act(
        &self,
        verb: Verb,
        unit: &str,
        timeout: Duration,
    ) -> Result<ServiceAction, SystemdError> {
        let started = Instant::now();
        let Some(path) = self.load(unit)? else {
            debug!("{} '{unit}': no such unit, skipped", verb.as_str());
            return Ok(ServiceAction::Missing);
        };
        let before = self.read_state(unit, &path)?;
        match before.load_state.as_str() {
            "not-found" => {
                debug!("{} '{unit}': unit not found, skipped", verb.as_str());
                return Ok(ServiceAction::Missing);
            }
            "masked" => {
                debug!("{} '{unit}': unit is masked, left alone", verb.as_str());
                return Ok(ServiceAction::Masked);
            }
            _ => {}
        }
        let event = self.run_job(verb, unit, timeout)?;
        let after = self.read_state(unit, &path)?;
        if !job_succeeded(&event.result) {
            return Err(SystemdError::JobFailed {
                verb: verb.as_str(),
                unit: unit.to_string(),
                job_result: event.result,
                active_state: after.active_state,
                sub_state: after.sub_state,
                unit_result: after.result,
            });
        }
        if verb == Verb::Start {
            if let Ok(mut started) = self.started.lock() {
                started.insert(unit.to_string(), after.clone());
            }
            self.check_started(unit, &path, after)?;
        }
        debug!(
            "{} '{unit}': job {} '{}' after {} ms",
            verb.as_str(),
            event.job,
            event.result,
            started.elapsed().as_millis()
        );
        Ok(ServiceAction::Done {
            job_result: event.result,
        })
    }

    /// After a `done` start job: active now (or a oneshot that ran fine).
    fn check_started(
        &self,
        unit: &str,
        path: &ObjectPath<'_>,
        after: UnitState,
    ) -> Result<(), SystemdError> {
        if after.active_state == "active" {
            return Ok(());
        }
        // a oneshot without RemainAfterExit is inactive again once it ran fine
        let service_type = self.service_type(unit, path)?;
        if started_ok(&after, &service_type) {
            return Ok(());
        }
        Err(SystemdError::NotActive {
            unit: unit.to_string(),
            active_state: after.active_state,
            sub_state: after.sub_state,
            unit_result: after.result,
        })
    }
}

impl ServiceManager for SystemdClient {
    fn stop(&self, unit: &str, timeout: Duration) -> Result<ServiceAction, SystemdError> {
        self.act(Verb::Stop, unit, timeout)
    }

    fn start(&self, unit: &str, timeout: Duration) -> Result<ServiceAction, SystemdError> {
        self.act(Verb::Start, unit, timeout)
    }

    fn started_state(&self, unit: &str) -> Option<UnitState> {
        self.started.lock().ok()?.remove(unit)
    }

    fn state(&self, unit: &str) -> Result<UnitState, SystemdError> {
        match self.load(unit)? {
            Some(path) => self.read_state(unit, &path),
            None => Ok(UnitState {
                unit: unit.to_string(),
                load_state: "not-found".to_string(),
                active_state: "inactive".to_string(),
                sub_state: "dead".to_string(),
                ..UnitState::default()
            }),
        }
    }
}

fn call_error(method: &'static str, unit: &str, source: zbus::Error) -> SystemdError {
    SystemdError::Call {
        method,
        unit: unit.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::stream;

    fn ev(id: u32, unit: &str, result: &str) -> JobEvent {
        JobEvent {
            id,
            job: format!("/org/freedesktop/systemd1/job/{id}"),
            unit: unit.to_string(),
            result: result.to_string(),
        }
    }

    const OURS: &str = "/org/freedesktop/systemd1/job/42";
    const T: Duration = Duration::from_secs(5);

    #[test]
    fn other_jobs_are_ignored_and_ours_is_returned() {
        // someone else's job on the same unit first, then an unrelated one, then ours
        let events = vec![
            ev(41, "kubelet.service", "canceled"),
            ev(7, "docker.service", "failed"),
            ev(42, "kubelet.service", "done"),
            ev(43, "kubelet.service", "failed"),
        ];
        let got = zbus::block_on(wait_for_job(stream::iter(events), OURS, T));
        assert_eq!(got, JobWait::Removed(ev(42, "kubelet.service", "done")));
    }

    #[test]
    fn a_job_path_that_only_shares_a_prefix_is_not_ours() {
        let events = vec![
            ev(420, "kubelet.service", "done"),
            ev(4, "x.service", "done"),
        ];
        let got = zbus::block_on(wait_for_job(stream::iter(events), OURS, T));
        assert_eq!(got, JobWait::StreamEnded);
    }

    #[test]
    fn no_signal_for_our_job_times_out() {
        let events = stream::iter(vec![ev(1, "a.service", "done")]).chain(stream::pending());
        let started = Instant::now();
        let got = zbus::block_on(wait_for_job(events, OURS, Duration::from_millis(100)));
        assert_eq!(got, JobWait::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn what_counts_as_started() {
        let st = |active: &str, sub: &str, result: &str| UnitState {
            active_state: active.into(),
            sub_state: sub.into(),
            result: result.into(),
            ..UnitState::default()
        };
        let table = [
            (
                "running simple",
                st("active", "running", "success"),
                "simple",
                true,
            ),
            (
                "running notify",
                st("active", "running", "success"),
                "notify",
                true,
            ),
            (
                "oneshot done",
                st("inactive", "dead", "success"),
                "oneshot",
                true,
            ),
            (
                "oneshot failed",
                st("failed", "failed", "exit-code"),
                "oneshot",
                false,
            ),
            (
                "simple exited",
                st("inactive", "dead", "success"),
                "simple",
                false,
            ),
            (
                "simple crashed",
                st("failed", "failed", "exit-code"),
                "simple",
                false,
            ),
            (
                "restarting",
                st("activating", "auto-restart", "exit-code"),
                "simple",
                false,
            ),
            (
                "deactivating",
                st("deactivating", "stop-sigterm", "success"),
                "notify",
                false,
            ),
        ];
        for (case, state, service_type, ok) in table {
            assert_eq!(started_ok(&state, service_type), ok, "case '{case}'");
        }
    }

    #[test]
    fn only_done_and_skipped_succeed() {
        let table = [
            ("done", true),
            ("skipped", true),
            ("canceled", false),
            ("timeout", false),
            ("failed", false),
            ("dependency", false),
            ("invalid", false),
            ("once", false),
            ("", false),
        ];
        for (result, ok) in table {
            assert_eq!(job_succeeded(result), ok, "job result '{result}'");
        }
    }

    #[test]
    fn unreachable_bus_is_a_connect_error() {
        // nothing listens at this address (no process-wide env var: tests run in threads)
        let builder =
            zbus::blocking::connection::Builder::address("unix:path=/nonexistent/k8s-nokmem-test")
                .unwrap();
        let err = open(builder).unwrap_err();
        assert!(matches!(err, SystemdError::Connect(_)), "{err:?}");
        assert_eq!(err.to_string(), "failed to connect to the system bus");
    }
}
