//! sramlink-peer as a library: the Linux end of the sramlink ring, host-testable.
//!
//! The binary (`main.rs`) only parses the command line and prints; everything it does lives
//! here so that host tests can drive it:
//!
//! 1. [`cli`] turns the command line into a [`cli::RegionSource`] and a [`cli::Mode`].
//! 2. [`devicetree`] finds the `mmio-sram` node and the `/reserved-memory` ranges in the
//!    device tree blob Linux booted with (`/sys/firmware/fdt`; a parameter, so tests write
//!    their own), interpreted by `sramlink-devicetree` exactly as the guest interprets its own.
//! 3. [`mapping`] maps the region: the sramlink dom0 module's device ([`device`] finds it and
//!    asks it for base and size), a physical range of `/dev/mem`, or a host file with
//!    `MAP_SHARED`; the ring reaches it only through a handle that borrows the mapping.
//! 4. [`session`] attaches to the ring the guest created and runs `ping`, `echo` or `stream`,
//!    checking sequence numbers, checksums and payload patterns, timing round trips with
//!    [`counter`] and waiting with the [`backoff`] policy.
//! 5. [`stats`] and [`report`] turn the samples and counters into the human summary and the
//!    one-line `SRAMLINK-REPORT {json}`.
//!
//! [`app::execute`] chains these steps for `main`.

pub mod app;
pub mod backoff;
pub mod cli;
pub mod counter;
pub mod device;
pub mod devicetree;
pub mod error;
pub mod evtchn;
pub mod mapping;
pub mod numbers;
pub mod report;
pub mod session;
pub mod stats;
