//! A QEMU process whose serial console is logged to a file and matched line by line, stage by
//! stage, each with its own timeout and a message naming the stage that failed.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

/// How many console lines a failure message quotes.
const TAIL_LINES: usize = 25;

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
        writeln!(log, "# qemu-system-aarch64 {}", args.join(" "))?;

        let mut child = Command::new("qemu-system-aarch64")
            .args(args)
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
    pub fn wait_for<T>(
        &mut self,
        stage: &str,
        what: &str,
        timeout: Duration,
        mut matcher: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
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
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self
                        .stage_error(stage, &format!("no {what} within {} s", timeout.as_secs())));
                }
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

    /// Waits for QEMU to exit by itself (the guest or dom0 powered off), draining the console.
    pub fn wait_exit(&mut self, stage: &str, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // Drain what is still buffered so the log and `lines_seen` are complete.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(self.stage_error(
                    stage,
                    &format!("QEMU did not exit within {} s", timeout.as_secs()),
                ));
            }
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => self.seen.push(line),
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
            "stage '{stage}' failed after {:.1} s: {what}\n  last console lines:\n    {tail}\n  full console log: {}",
            self.started.elapsed().as_secs_f64(),
            self.log_path.display()
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
