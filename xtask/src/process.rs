//! Commands with a time limit: a step that hangs (a network download, a wedged tool) fails
//! with an error naming the step instead of stalling the run.

use anyhow::{Context, Result, bail};
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a running child is polled.
const POLL: Duration = Duration::from_millis(50);

/// `limit` in seconds as people write it: `600 s`, `0.2 s`.
fn seconds(limit: Duration) -> String {
    format!("{} s", limit.as_secs_f64())
}

/// Waits for `child` until `limit` (scaled by [`crate::limits`]); past it kills the child and
/// fails with "`step` timed out after N s (limits scaled by …)".
fn wait_within(child: &mut Child, step: &str, limit: Duration) -> Result<ExitStatus> {
    let limit = crate::limits::scaled(limit);
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("{step}: waiting for the command"))?
        {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{step} timed out after {} ({})",
                seconds(limit),
                crate::limits::note()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Runs `command` with the terminal's stdout and stderr, failing when it does not succeed
/// within `limit`; `step` names it in every error.
pub fn status_within(command: &mut Command, step: &str, limit: Duration) -> Result<()> {
    let mut child = command
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("{step}: cannot run {command:?}"))?;
    let status = wait_within(&mut child, step, limit)?;
    if !status.success() {
        bail!("{step} failed: {command:?} exited with {status}");
    }
    Ok(())
}

/// Runs `command` capturing stdout and stderr, failing when it does not exit within `limit`
/// (the exit status is the caller's to judge); `step` names it in every error.
pub fn output_within(command: &mut Command, step: &str, limit: Duration) -> Result<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{step}: cannot run {command:?}"))?;
    // Drain both pipes meanwhile, so a chatty child cannot block on a full pipe.
    fn drain(pipe: Option<impl Read + Send + 'static>) -> Option<JoinHandle<Vec<u8>>> {
        pipe.map(|mut pipe| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_within(&mut child, step, limit)?;
    let collect = |reader: Option<JoinHandle<Vec<u8>>>| {
        reader
            .map(|reader| reader.join().unwrap_or_default())
            .unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_run_within_their_limit() {
        let out = output_within(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            "test step",
            Duration::from_secs(30),
        )
        .expect("runs");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        status_within(&mut Command::new("true"), "true", Duration::from_secs(30)).expect("true");
        let failed = status_within(
            &mut Command::new("false"),
            "the false step",
            Duration::from_secs(30),
        )
        .expect_err("fails");
        assert!(format!("{failed:#}").starts_with("the false step failed"));
    }

    #[test]
    fn a_command_past_its_limit_is_killed_and_named() {
        let error = output_within(
            Command::new("sleep").arg("20"),
            "download Debian packages",
            Duration::from_millis(200),
        )
        .expect_err("times out");
        assert_eq!(
            format!("{error:#}"),
            "download Debian packages timed out after 0.2 s (limits scaled by 1 \
             (--timeout-scale or SRAMLINK_TIMEOUT_SCALE to change))"
        );
        let error = status_within(
            Command::new("sleep").arg("20"),
            "unpack x.deb (dpkg-deb -x)",
            Duration::from_millis(200),
        )
        .expect_err("times out");
        assert!(format!("{error:#}").contains("unpack x.deb (dpkg-deb -x) timed out after 0.2 s"));
        assert_eq!(seconds(Duration::from_secs(600)), "600 s");
    }
}
