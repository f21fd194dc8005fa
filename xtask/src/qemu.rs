//! A QEMU process whose serial console is logged to a file and matched line by line, stage by
//! stage, each with its own limit and a message naming the stage that failed.
//!
//! A stage's limit bounds the time *without progress*: every new console line starts it again,
//! so a slow but progressing run on a loaded host is never cut off, while a silent one fails
//! after the limit. A stage that keeps printing without ever reaching its goal still ends, at
//! [`PROGRESS_CAP`] times its limit. Every limit is scaled by [`crate::limits`].

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

/// How many console lines a failure message quotes.
const TAIL_LINES: usize = 25;

/// A stage that keeps making progress may run this many times its limit, no longer.
pub const PROGRESS_CAP: u32 = 10;

/// Arguments every QEMU run gets, the DTB dumps included (so the dumped tree describes the
/// booted machine): no network card. QEMU `virt` otherwise creates a virtio NIC whose option
/// ROM (`efi-virtio.rom`) comes from the optional `ipxe-qemu` package, and no run here needs a
/// network.
pub const COMMON_ARGS: &[&str] = &["-nic", "none"];

/// A running QEMU with its console.
pub struct Qemu {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    log_path: PathBuf,
    fatal_patterns: Vec<String>,
    started: Instant,
}

impl Qemu {
    /// Starts `qemu-system-aarch64 args…` with the serial console on stdout (the caller passes
    /// `-serial stdio` or equivalent), logging everything to `target/sramlink/logs/NAME.log`.
    pub fn spawn(args: &[String], log_name: &str) -> Result<Self> {
        let log_dir = crate::paths::logs_dir();
        std::fs::create_dir_all(&log_dir)?;
        let log_path = log_dir.join(format!("{log_name}.log"));
        let mut log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        writeln!(
            log,
            "# qemu-system-aarch64 {} {}",
            args.join(" "),
            COMMON_ARGS.join(" ")
        )?;

        let mut child = Command::new("qemu-system-aarch64")
            .args(args)
            .args(COMMON_ARGS)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting qemu-system-aarch64")?;
        let (sender, lines) = channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log_err = log.try_clone()?;
        forward_lines(stdout, log, sender.clone(), "");
        forward_lines(stderr, log_err, sender, "qemu stderr: ");
        Ok(Self {
            child,
            lines,
            seen: Vec::new(),
            log_path,
            fatal_patterns: Vec::new(),
            started: Instant::now(),
        })
    }

    /// Lines that end every stage at once with a failure (a panic, a guest error not expected).
    pub fn set_fatal_patterns(&mut self, patterns: &[&str]) {
        self.fatal_patterns = patterns.iter().map(|p| p.to_string()).collect();
    }

    /// The console log file.
    /// The QEMU process id (for its CPU time in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Every console line received so far.
    pub fn lines_seen(&self) -> &[String] {
        &self.seen
    }

    /// Seconds since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until a console line contains `needle`; returns that line.
    pub fn expect(&mut self, stage: &str, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_for(
            stage,
            &format!("a line containing {needle:?}"),
            timeout,
            |line| line.contains(needle).then(|| line.to_string()),
        )
    }

    /// Waits until `matcher` accepts a console line. `what` describes it for the error message.
    /// `timeout` is the longest wait without a new console line (see the module docs).
    pub fn wait_for<T>(
        &mut self,
        stage: &str,
        what: &str,
        timeout: Duration,
        mut matcher: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let mut progress = Progress::new(timeout);
        loop {
            let left = match progress.left() {
                Ok(left) => left,
                Err(why) => {
                    return Err(self.stage_error(stage, &format!("{why} while waiting for {what}")));
                }
            };
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    progress.made();
                    self.seen.push(line.clone());
                    if let Some(found) = matcher(&line) {
                        return Ok(found);
                    }
                    if let Some(pattern) = self.fatal_patterns.iter().find(|p| line.contains(*p)) {
                        let pattern = pattern.clone();
                        return Err(self.stage_error(
                            stage,
                            &format!("the console printed {pattern:?} while waiting for {what}"),
                        ));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    return Err(self.stage_error(
                        stage,
                        &format!("QEMU exited ({status:?}) before {what} appeared"),
                    ));
                }
            }
        }
    }

    /// Waits for QEMU to exit by itself (the guest or dom0 powered off), draining the console;
    /// `timeout` is the longest wait without a new console line.
    pub fn wait_exit(&mut self, stage: &str, timeout: Duration) -> Result<ExitStatus> {
        let mut progress = Progress::new(timeout);
        loop {
            if let Some(status) = self.child.try_wait()? {
                // Drain what is still buffered so the log and `lines_seen` are complete.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return Ok(status);
            }
            if let Err(why) = progress.left() {
                return Err(
                    self.stage_error(stage, &format!("{why} while waiting for QEMU to exit"))
                );
            }
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    progress.made();
                    self.seen.push(line);
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
            }
        }
    }

    fn stage_error(&mut self, stage: &str, what: &str) -> anyhow::Error {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let start = self.seen.len().saturating_sub(TAIL_LINES);
        let tail = self.seen[start..].join("\n    ");
        anyhow::anyhow!(
            "stage '{stage}' failed after {:.1} s: {what}\n  last console lines:\n    {tail}\n  full console log: {}\n  ({})",
            self.started.elapsed().as_secs_f64(),
            self.log_path.display(),
            crate::limits::note()
        )
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A stage's clock: the limit without progress, restarted by each new console line, and the cap
/// on the whole stage.
struct Progress {
    limit: Duration,
    cap: Duration,
    started: Instant,
    last: Instant,
}

impl Progress {
    /// A clock for a stage whose (unscaled) limit without progress is `limit`.
    fn new(limit: Duration) -> Self {
        let limit = crate::limits::scaled(limit);
        let now = Instant::now();
        Self {
            limit,
            cap: limit * PROGRESS_CAP,
            started: now,
            last: now,
        }
    }

    /// A new console line arrived.
    fn made(&mut self) {
        self.last = Instant::now();
    }

    /// How long to wait for the next line, or why the stage is over.
    fn left(&self) -> std::result::Result<Duration, String> {
        let now = Instant::now();
        let quiet = now.duration_since(self.last);
        if quiet >= self.limit {
            return Err(format!(
                "no new console line for {} s",
                self.limit.as_secs_f64().round()
            ));
        }
        let running = now.duration_since(self.started);
        if running >= self.cap {
            return Err(format!(
                "still not done after {} s of console output ({PROGRESS_CAP} times the stage's \
                 {} s limit)",
                self.cap.as_secs_f64().round(),
                self.limit.as_secs_f64().round()
            ));
        }
        Ok((self.limit - quiet).min(self.cap - running))
    }
}

/// Copies a QEMU output stream to the log and, line by line, to the channel.
fn forward_lines(
    stream: impl std::io::Read + Send + 'static,
    mut log: File,
    sender: Sender<String>,
    prefix: &'static str,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&raw);
                    let line = text.trim_end_matches(['\n', '\r']).to_string();
                    let _ = writeln!(log, "{prefix}{line}");
                    if sender.send(format!("{prefix}{line}")).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// Fails with a clear message when QEMU's exit status says it did not shut down cleanly.
pub fn check_clean_exit(status: ExitStatus, what: &str) -> Result<()> {
    if !status.success() {
        bail!("{what}: QEMU exited with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_stage_ends_after_its_limit_and_says_so() {
        let progress = Progress::new(Duration::from_millis(30));
        assert!(progress.left().is_ok());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            progress
                .left()
                .expect_err("quiet for longer than the limit"),
            "no new console line for 0 s"
        );
    }

    #[test]
    fn progress_restarts_the_limit_up_to_the_cap() {
        let mut progress = Progress::new(Duration::from_millis(40));
        // Lines keep coming: the stage goes on past its limit...
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(20));
            progress.made();
            assert!(progress.left().is_ok());
        }
        // ...but never past PROGRESS_CAP times it.
        progress.started -= Duration::from_millis(40) * PROGRESS_CAP;
        progress.made();
        let why = progress.left().expect_err("past the cap");
        assert!(
            why.starts_with("still not done after 0 s of console output"),
            "{why}"
        );
    }
}
