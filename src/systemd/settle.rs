//! The settle watch: a service that dies after its start job is a failed start.
//!
//! systemd ends a `Type=simple` unit's start job as soon as it forked, and a `notify` one as
//! soon as it said ready: a kubelet with a bad flag or the wrong cgroup driver exits seconds
//! later and, with `Restart=always`, crash-loops while the start looked fine. So every unit a
//! transaction (re)started is watched, all of them together, until each has been up for the
//! settle window since its own start: same `MainPID`, same `ActiveEnterTimestamp`, still
//! `active`. For `kubelet.service` its healthz endpoint
//! ([`KUBELET_HEALTHZ`]) is asked too: when it answers, the last answer must be `200`; when
//! nothing listens (kubelet's `--healthz-port=0`, or not up yet) it does not count. An
//! answer counts only when every listening socket that can answer there is held by
//! kubelet's `MainPID` (`listener.rs`): anyone may listen on a free port, so a stranger's
//! answer neither vetoes nor passes the check; it is ignored and logged. Only properties
//! systemd 229 has are read (no `NRestarts`, which is 235+).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::listener::{self, Holder};
use super::{ServiceManager, SystemdError, UnitState};

/// kubelet's healthz endpoint (`--healthz-bind-address` 127.0.0.1, `--healthz-port` 10248).
pub const KUBELET_HEALTHZ: &str = "127.0.0.1:10248";
/// The unit whose healthz endpoint is asked.
pub const KUBELET_UNIT: &str = "kubelet.service";
const POLL: Duration = Duration::from_millis(250);
const HEALTHZ_EVERY: Duration = Duration::from_secs(1);
const HEALTHZ_TIMEOUT: Duration = Duration::from_millis(800);

/// A unit this run (re)started, as it was right after its start job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub state: UnitState,
    /// When its start job ended: it is watched until `at + window`.
    pub at: Instant,
}

impl Started {
    pub fn now(state: UnitState) -> Started {
        Started {
            state,
            at: Instant::now(),
        }
    }
}

/// Why a watched unit is not up any more (pure, for tests): `None` while it is.
pub fn went_down(before: &UnitState, now: &UnitState) -> Option<String> {
    if now.active_state != "active" {
        let gone = match before.main_pid {
            0 => String::new(),
            pid => format!(", its main process {pid} gone"),
        };
        return Some(format!(
            "it is {}/{} (Result={}){gone}",
            now.active_state, now.sub_state, now.result
        ));
    }
    if before.main_pid != 0 && now.main_pid != before.main_pid {
        return Some(format!(
            "its main process changed from {} to {}: it exited and was restarted (Result={})",
            before.main_pid, now.main_pid, now.result
        ));
    }
    if now.active_enter_usec != before.active_enter_usec {
        return Some(format!(
            "it became active again (ActiveEnterTimestamp {} -> {}): it was restarted",
            before.active_enter_usec, now.active_enter_usec
        ));
    }
    None
}

/// What a healthz request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthz {
    /// Nothing answered (refused, timed out, not HTTP): it does not count.
    NoAnswer(String),
    /// An HTTP answer: its status code and the start of its body.
    Answer { code: u16, body: String },
    /// An answer from a socket kubelet's main process does not hold (or that could not be
    /// told): it does not count.
    NotKubelet(String),
}

impl Healthz {
    fn is_bad(&self) -> bool {
        matches!(self, Healthz::Answer { code, .. } if *code != 200)
    }
}

/// `GET /healthz` over plain TCP with a short timeout (std only).
pub fn probe_healthz(addr: &str, timeout: Duration) -> Healthz {
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => return Healthz::NoAnswer(format!("bad address '{addr}': {e}")),
    };
    let exchange = || -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        write!(
            s,
            "GET /healthz HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: k8s-nokmem\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = Vec::new();
        s.take(4096).read_to_end(&mut buf)?;
        Ok(buf)
    };
    match exchange() {
        Ok(reply) => parse_http_reply(&reply),
        Err(e) => Healthz::NoAnswer(e.to_string()),
    }
}

/// Ask kubelet's healthz at `addr` and keep the answer only when the listening sockets
/// that can answer there (the same before and after the request) are all held by
/// `main_pid`, kubelet's main process.
pub fn ask_kubelet_healthz(addr: &str, main_pid: u32, timeout: Duration) -> Healthz {
    let target: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => return Healthz::NoAnswer(format!("bad address '{addr}': {e}")),
    };
    let before = listener::listeners(target);
    let answer = probe_healthz(addr, timeout);
    let Healthz::Answer { code, .. } = &answer else {
        return answer;
    };
    let code = *code;
    let after = listener::listeners(target);
    let why = match (before, after) {
        (Ok(before), Ok(after)) if before == after => match listener::held_by(&after, main_pid) {
            Holder::Process => return answer,
            Holder::NoListener => {
                "no listening socket for it in this network namespace's tables".to_string()
            }
            Holder::Other { why, .. } => why,
        },
        (Ok(_), Ok(_)) => "the listening sockets changed while it was asked".to_string(),
        (Err(e), _) | (_, Err(e)) => format!("cannot read the socket tables: {e}"),
    };
    Healthz::NotKubelet(format!(
        "answer {code} ignored: it may not come from kubelet (main process {main_pid}): {why}"
    ))
}

/// `HTTP/1.1 200 OK\r\n...\r\n\r\nok` -> Answer { 200, "ok" } (pure).
pub fn parse_http_reply(reply: &[u8]) -> Healthz {
    let text = String::from_utf8_lossy(reply);
    let status = text.lines().next().unwrap_or("");
    let mut parts = status.split_whitespace();
    let code = match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/") => code,
        _ => return Healthz::NoAnswer(format!("not an HTTP reply: '{}'", status.trim())),
    };
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("")
        .trim();
    let body: String = body.chars().take(200).collect();
    Healthz::Answer { code, body }
}

/// Watch `started` until each has been up for `window` since its start; the first unit
/// that went down fails it. Polls every unit together, so the window is paid once.
pub fn watch<M: ServiceManager + ?Sized>(
    manager: &M,
    started: &[Started],
    window: Duration,
) -> Result<(), SystemdError> {
    watch_with(manager, started, window, KUBELET_HEALTHZ)
}

/// [`watch`] with kubelet's healthz at `healthz` (tests point it at their own listener).
pub fn watch_with<M: ServiceManager + ?Sized>(
    manager: &M,
    started: &[Started],
    window: Duration,
    healthz: &str,
) -> Result<(), SystemdError> {
    if started.is_empty() {
        return Ok(());
    }
    // a window past what `Instant` can hold waits as long as it can, never panics
    let until = started
        .iter()
        .filter_map(|s| s.at.checked_add(window))
        .max();
    let mut last_healthz: Option<(Instant, Healthz)> = None;
    let asks_healthz = started.iter().any(|s| s.state.unit == KUBELET_UNIT);
    let mut kubelet_pid = 0;
    let mut warned = false;
    loop {
        for s in started {
            let now = manager.state(&s.state.unit)?;
            if let Some(why) = went_down(&s.state, &now) {
                return Err(settle_failed(s, window, why, now));
            }
            if s.state.unit == KUBELET_UNIT {
                kubelet_pid = now.main_pid;
            }
        }
        let due = match &last_healthz {
            None => true,
            Some((at, _)) => at.elapsed() >= HEALTHZ_EVERY,
        };
        if asks_healthz && due {
            let answer = ask_kubelet_healthz(healthz, kubelet_pid, HEALTHZ_TIMEOUT);
            debug!("settle: kubelet healthz http://{healthz}/healthz: {answer:?}");
            if let Healthz::NotKubelet(why) = &answer {
                if !warned {
                    warn!("settle: kubelet's healthz http://{healthz}/healthz: {why}; only kubelet's own state counts");
                    warned = true;
                }
            }
            last_healthz = Some((Instant::now(), answer));
        }
        let left = match until {
            Some(until) => until.saturating_duration_since(Instant::now()),
            None => window,
        };
        if left.is_zero() {
            break;
        }
        std::thread::sleep(POLL.min(left));
    }
    if let Some((_, answer @ Healthz::Answer { code, body })) = &last_healthz {
        if answer.is_bad() {
            let s = started
                .iter()
                .find(|s| s.state.unit == KUBELET_UNIT)
                .cloned()
                .unwrap_or_else(|| started[0].clone());
            let now = manager.state(&s.state.unit)?;
            let why =
                format!("its healthz endpoint http://{healthz}/healthz answers {code}: '{body}'");
            return Err(settle_failed(&s, window, why, now));
        }
    }
    for s in started {
        debug!(
            "settle: '{}' up for {} ms with main process {}",
            s.state.unit,
            s.at.elapsed().as_millis(),
            s.state.main_pid
        );
    }
    Ok(())
}

fn settle_failed(s: &Started, window: Duration, why: String, now: UnitState) -> SystemdError {
    SystemdError::Settle {
        unit: s.state.unit.clone(),
        after_ms: s.at.elapsed().as_millis() as u64,
        window,
        why,
        active_state: now.active_state,
        sub_state: now.sub_state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systemd::fake::{FakeSystemd, Stranger};
    use std::net::TcpListener;

    fn st(active: &str, sub: &str, pid: u32, since: u64) -> UnitState {
        UnitState {
            unit: "kubelet.service".into(),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: sub.into(),
            result: "success".into(),
            active_enter_usec: since,
            main_pid: pid,
        }
    }

    #[test]
    fn what_counts_as_going_down() {
        let before = st("active", "running", 10, 5);
        let table = [
            ("still up", st("active", "running", 10, 5), None),
            (
                "restarting",
                st("activating", "auto-restart", 0, 5),
                Some("activating/auto-restart"),
            ),
            (
                "failed",
                st("failed", "failed", 0, 5),
                Some("failed/failed"),
            ),
            (
                "stopped",
                st("inactive", "dead", 0, 5),
                Some("inactive/dead"),
            ),
            (
                "restarted between two polls",
                st("active", "running", 11, 9),
                Some("changed from 10 to 11"),
            ),
            (
                "same pid, new activation",
                st("active", "running", 10, 9),
                Some("restarted"),
            ),
        ];
        for (case, now, want) in table {
            let got = went_down(&before, &now);
            match (want, &got) {
                (None, None) => {}
                (Some(w), Some(g)) if g.contains(w) => {}
                _ => panic!("case '{case}': {got:?}"),
            }
        }
        // a oneshot with RemainAfterExit has no main process: only its state counts
        let oneshot = st("active", "exited", 0, 5);
        assert_eq!(went_down(&oneshot, &oneshot), None);
    }

    #[test]
    fn http_replies() {
        let table: [(&[u8], Healthz); 4] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                Healthz::Answer {
                    code: 200,
                    body: "ok".into(),
                },
            ),
            (
                b"HTTP/1.1 500 Internal Server Error\r\n\r\n[-]syncloop failed\nhealthz check failed\n",
                Healthz::Answer {
                    code: 500,
                    body: "[-]syncloop failed\nhealthz check failed".into(),
                },
            ),
            (b"", Healthz::NoAnswer("not an HTTP reply: ''".into())),
            (
                b"SSH-2.0-OpenSSH\r\n",
                Healthz::NoAnswer("not an HTTP reply: 'SSH-2.0-OpenSSH'".into()),
            ),
        ];
        for (reply, want) in table {
            assert_eq!(
                parse_http_reply(reply),
                want,
                "case {:?}",
                String::from_utf8_lossy(reply)
            );
        }
    }

    /// A one-connection-at-a-time HTTP server on a free port answering `reply`.
    fn serve(reply: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                // read the whole request first: closing with unread bytes resets the
                // connection, and the client may lose the reply
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(reply.as_bytes());
                let _ = conn.shutdown(std::net::Shutdown::Write);
            }
        });
        addr
    }

    /// An active kubelet whose main process is `pid`.
    fn kubelet_started_as(pid: u32) -> (FakeSystemd, Vec<Started>) {
        let sd = FakeSystemd::with_active(&["kubelet.service"]);
        let mut state = sd.unit_state("kubelet.service");
        state.main_pid = pid;
        sd.set_state(state.clone());
        (sd, vec![Started::now(state)])
    }

    /// An active kubelet whose main process is this test process, which holds the
    /// listeners [`serve`] makes.
    fn kubelet_started() -> (FakeSystemd, Vec<Started>) {
        kubelet_started_as(std::process::id())
    }

    #[test]
    fn healthz_over_real_tcp() {
        let ok = serve("HTTP/1.1 200 OK\r\n\r\nok");
        assert_eq!(
            probe_healthz(&ok, Duration::from_secs(2)),
            Healthz::Answer {
                code: 200,
                body: "ok".into()
            }
        );
        // a listener that never answers (held, never accepted): no answer, after the timeout
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let t0 = Instant::now();
        assert!(matches!(
            probe_healthz(&addr, Duration::from_millis(300)),
            Healthz::NoAnswer(_)
        ));
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        drop(silent);
    }

    #[test]
    fn a_kubelet_whose_healthz_fails_does_not_settle() {
        let bad = serve("HTTP/1.1 500 Internal Server Error\r\n\r\n[-]syncloop failed");
        let (sd, started) = kubelet_started();
        let err = watch_with(&sd, &started, Duration::from_millis(300), &bad).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("'kubelet.service'") && msg.contains("answers 500: '[-]syncloop failed'"),
            "{msg}"
        );
        // healthz ok, or nothing listening: settles
        let ok = serve("HTTP/1.1 200 OK\r\n\r\nok");
        let (sd, started) = kubelet_started();
        watch_with(&sd, &started, Duration::from_millis(300), &ok).unwrap();
        let (sd, started) = kubelet_started();
        let t0 = Instant::now();
        watch_with(&sd, &started, Duration::from_millis(300), "127.0.0.1:1").unwrap();
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn only_a_listener_held_by_kubelets_main_process_counts() {
        let stranger = Stranger::serve_500("127.0.0.1:0");
        // kubelet (this process) does not listen there: the stranger's 500 is ignored
        let (sd, started) = kubelet_started();
        let answer = ask_kubelet_healthz(&stranger.addr, std::process::id(), HEALTHZ_TIMEOUT);
        assert!(
            matches!(&answer, Healthz::NotKubelet(why) if why.contains("answer 500 ignored") && why.contains(&format!("not held by process {}", std::process::id()))),
            "{answer:?}"
        );
        watch_with(&sd, &started, Duration::from_millis(300), &stranger.addr)
            .expect("a stranger's 500 must not veto the settle check");
        // the same listener as kubelet's main process: its 500 fails the check
        let (sd, started) = kubelet_started_as(stranger.child.id());
        let err =
            watch_with(&sd, &started, Duration::from_millis(300), &stranger.addr).unwrap_err();
        assert!(
            err.to_string().contains("answers 500: '[-]not kubelet'"),
            "{err}"
        );
    }

    #[test]
    fn the_window_is_paid_once_for_all_units() {
        let sd = FakeSystemd::with_active(&["a.service", "b.service", "c.service"]);
        let started: Vec<Started> = ["a.service", "b.service", "c.service"]
            .iter()
            .map(|u| Started::now(sd.unit_state(u)))
            .collect();
        let t0 = Instant::now();
        watch_with(&sd, &started, Duration::from_millis(400), "127.0.0.1:1").unwrap();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(1000),
            "{took:?}"
        );
        assert!(watch(&sd, &[], Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn a_window_past_instants_range_does_not_panic() {
        let sd = FakeSystemd::with_active(&["docker.service"]);
        let started = [Started::now(sd.unit_state("docker.service"))];
        let mut restarted = sd.unit_state("docker.service");
        restarted.main_pid += 7;
        sd.set_state(restarted);
        let err = watch_with(&sd, &started, Duration::MAX, "127.0.0.1:1").unwrap_err();
        assert!(err.to_string().contains("did not stay up"), "{err}");
    }

    #[test]
    fn a_unit_that_restarts_meanwhile_fails_the_watch() {
        let sd = FakeSystemd::with_active(&["docker.service", "kubelet.service"]);
        let started: Vec<Started> = ["docker.service", "kubelet.service"]
            .iter()
            .map(|u| Started::now(sd.unit_state(u)))
            .collect();
        let mut restarted = sd.unit_state("docker.service");
        restarted.main_pid += 7;
        restarted.active_enter_usec += 1;
        sd.set_state(restarted);
        let err = watch_with(&sd, &started, Duration::from_secs(5), "127.0.0.1:1").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("'docker.service' did not stay up")
                && msg.contains("main process changed"),
            "{msg}"
        );
    }
}
