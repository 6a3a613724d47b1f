//! The server processes of a run: started from their binaries, found by the one
//! `listening: ...` line each prints (or by polling its port), measured through `/proc`, and
//! stopped with SIGTERM (SIGKILL after a grace period) when dropped.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procfs::ProcSet;

/// How long a server may take to print its `listening:` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// One running server process.
#[derive(Debug)]
pub struct Server {
    pub name: String,
    child: Option<Child>,
    pub pid: u32,
    /// What followed `listening: ` (a URL or a socket path).
    pub listening: String,
    pub procs: ProcSet,
    pub stderr_log: PathBuf,
}

impl Server {
    /// Start `cmd` and wait for the line `listening: X` on its stdout. Stdout keeps being
    /// drained by a thread (so the child never blocks on a full pipe); stderr goes to
    /// `log_dir/<name>.stderr`.
    pub fn spawn(name: &str, cmd: Command, log_dir: &Path) -> anyhow::Result<Server> {
        Server::spawn_with_timeout(name, cmd, log_dir, START_TIMEOUT)
    }

    /// [`Server::spawn`] with another start-up bound (a server under valgrind is slow).
    pub fn spawn_with_timeout(
        name: &str,
        mut cmd: Command,
        log_dir: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Server> {
        let stderr_log = log_dir.join(format!("{name}.stderr"));
        let err_file = std::fs::File::create(&stderr_log)
            .with_context(|| format!("cannot create {}", stderr_log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_file));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        let pid = child.id();
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            bail!("{name}: no stdout pipe");
        };
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                // Ends at EOF, i.e. when the child exits.
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.strip_prefix("listening: ") {
                        let _ = tx.send(rest.trim().to_owned());
                    }
                }
            })
            .context("cannot start a stdout reader thread")?;
        let mut server = Server {
            name: name.to_owned(),
            child: Some(child),
            pid,
            listening: String::new(),
            procs: ProcSet::single(pid),
            stderr_log,
        };
        match rx.recv_timeout(timeout) {
            Ok(l) => server.listening = l,
            Err(_) => {
                let log = std::fs::read_to_string(&server.stderr_log).unwrap_or_default();
                server.stop();
                bail!(
                    "{name} did not print its `listening:` line within {timeout:?}; stderr:\n{}",
                    tail(&log, 2000)
                );
            }
        }
        Ok(server)
    }

    /// Start `cmd` (which prints nothing useful) and wait until `addr` accepts connections.
    pub fn spawn_on_port(
        name: &str,
        mut cmd: Command,
        addr: SocketAddr,
        log_dir: &Path,
    ) -> anyhow::Result<Server> {
        let stderr_log = log_dir.join(format!("{name}.stderr"));
        let err_file = std::fs::File::create(&stderr_log)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err_file));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        let pid = child.id();
        let mut server = Server {
            name: name.to_owned(),
            child: Some(child),
            pid,
            listening: format!("http://{addr}"),
            procs: ProcSet::single(pid),
            stderr_log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if let Some(c) = server.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let log = std::fs::read_to_string(&server.stderr_log).unwrap_or_default();
                bail!(
                    "{name} exited ({status}) before listening; stderr:\n{}",
                    tail(&log, 2000)
                );
            }
            if Instant::now() >= deadline {
                server.stop();
                bail!("{name} did not listen on {addr} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `http://IP:PORT` this server printed, as an address.
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        let hostport = self
            .listening
            .strip_prefix("http://")
            .unwrap_or(&self.listening)
            .trim_end_matches('/');
        hostport
            .parse()
            .with_context(|| format!("{}: not an address: {:?}", self.name, self.listening))
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `n` bytes of `s` (on a char boundary).
pub fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Copy the servers' logs (`*.stderr` in `work`, where [`Server::spawn`] writes them) to
/// `dest`, replacing what an earlier run left there: the work directory is deleted at the end of
/// a run, and an error in a scenario is only explained by the servers' side of it. Returns how
/// many logs were kept.
pub fn keep_logs(work: &Path, dest: &Path) -> anyhow::Result<usize> {
    match std::fs::remove_dir_all(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot clear {}", dest.display())),
    }
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let mut kept = 0;
    for entry in
        std::fs::read_dir(work).with_context(|| format!("cannot read {}", work.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "stderr")
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, dest.join(name))
                .with_context(|| format!("cannot copy {}", path.display()))?;
            kept += 1;
        }
    }
    Ok(kept)
}

/// A free loopback port (bound and released at once; the tiny race is acceptable for a
/// benchmark that starts its servers one after the other).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// Run a command to completion (bounded by `timeout`) and return its stdout. Output of any
/// size is read while the command runs.
pub fn run_output(mut cmd: Command, timeout: Duration) -> anyhow::Result<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("run-output".into())
        .spawn(move || {
            let _ = tx.send(child.wait_with_output());
        })
        .context("cannot start a thread")?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(out)) => bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 2000)
        ),
        Ok(Err(e)) => Err(e).with_context(|| format!("waiting for {cmd:?}")),
        Err(_) => {
            if let Some(p) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
            bail!("{cmd:?} did not finish within {timeout:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_logs_and_replaces_an_earlier_runs() {
        let work = tempfile::tempdir().unwrap();
        std::fs::write(work.path().join("iris.stderr"), "iris log").unwrap();
        std::fs::write(work.path().join("mock.stderr"), "mock log").unwrap();
        std::fs::write(work.path().join("iris.hujson"), "{}").unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("logs");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("stale.stderr"), "old").unwrap();
        assert_eq!(keep_logs(work.path(), &dest).unwrap(), 2);
        let mut names: Vec<String> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["iris.stderr", "mock.stderr"]);
        assert_eq!(
            std::fs::read_to_string(dest.join("iris.stderr")).unwrap(),
            "iris log"
        );
    }

    #[test]
    fn tails_on_char_boundaries() {
        assert_eq!(tail("hello", 3), "llo");
        assert_eq!(tail("hi", 10), "hi");
        assert_eq!(tail("aé", 1), "");
    }

    #[test]
    fn spawns_waits_for_listening_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("echo banner; echo 'listening: http://127.0.0.1:9'; exec sleep 30");
        let mut s = Server::spawn("fake", cmd, dir.path()).unwrap();
        assert_eq!(s.listening, "http://127.0.0.1:9");
        assert_eq!(s.addr().unwrap(), "127.0.0.1:9".parse().unwrap());
        assert!(s.running());
        let t0 = Instant::now();
        s.stop();
        assert!(!s.running());
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "SIGTERM ends sleep at once"
        );
    }

    #[test]
    fn a_server_that_never_listens_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("echo oops >&2; exit 3");
        let err = Server::spawn("broken", cmd, dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("oops"), "{err:#}");
    }

    #[test]
    fn runs_commands_with_a_bound() {
        let mut c = Command::new("echo");
        c.arg("hi");
        assert_eq!(run_output(c, Duration::from_secs(5)).unwrap(), "hi\n");
        let mut c = Command::new("sleep");
        c.arg("10");
        assert!(run_output(c, Duration::from_millis(200)).is_err());
    }
}
