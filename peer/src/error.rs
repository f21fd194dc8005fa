//! The peer's error type: a kind (for tests and exit handling) and a message for humans.

use std::fmt;

/// What went wrong, coarsely: tests match on it, users read the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command line is inconsistent (checked after clap's own parsing).
    Usage,
    /// Finding or mapping the shared region failed.
    Region,
    /// The ring header is not (yet) a valid sramlink header.
    Attach,
    /// The other side broke the ring or the demo protocol.
    Protocol,
    /// The guest did not answer in time (or its heartbeat stopped).
    Timeout,
    /// The guest re-created the region under us: nothing may be written to it any more.
    GuestRestarted,
    /// Xen event channels were asked for and cannot be used (device, port, bind, notify).
    Events,
}

/// An error with a message that names the problem (printed as `sramlink-peer: error: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerError {
    /// Coarse classification.
    pub kind: ErrorKind,
    /// Full, self-contained explanation.
    pub message: String,
}

impl PeerError {
    /// Builds an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A [`ErrorKind::Usage`] error.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }

    /// A [`ErrorKind::Region`] error.
    pub fn region(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Region, message)
    }

    /// A [`ErrorKind::Attach`] error.
    pub fn attach(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Attach, message)
    }

    /// A [`ErrorKind::Protocol`] error.
    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }

    /// A [`ErrorKind::Events`] error.
    pub fn events(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Events, message)
    }

    /// A [`ErrorKind::Timeout`] error.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for PeerError {}
