//! Xen event channels for the guest: detecting Xen, mapping `shared_info`, the port dom0
//! binds, the upcall interrupt, and sending notifications.
//!
//! ```text
//!  detect: /hypervisor "xen,xen" in the tree ─┐
//!          or (entered at EL1, PSCI on hvc) the SMCCC hypervisor UID is Xen's,
//!          or the `xen_version` hypercall answers (probes guarded against undefined `hvc`)
//!  start:  XENMEM_add_to_physmap(shared_info → SHARED_INFO_PAGE's frame)
//!          EVTCHNOP_alloc_unbound(self, remote 0) → port; EVTCHNOP_unmask(port)
//!          GIC (from the tree) delivers the upcall PPI (/hypervisor's, else 31)
//!  then:   the ring header publishes the port (ABI §4.6); IRQ → take_events → woken
//!          notify: EVTCHNOP_send(port) when the peer is armed
//! ```
//! No Xen, or any step failing: no events, the guest polls and says why.

// `Unavailable` carries a `DtError` with a node path in a fixed-capacity string (no
// allocator); it is built at most once per boot, never on a hot path.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Once;

use sramlink::devicetree::{GicFrames, PhysRange, Platform, PsciConduit, XEN_DEFAULT_UPCALL_INTID};
use sramlink::xen::{
    AddToPhysmap, AllocUnbound, DOM0, DOMID_SELF, EVTCHNOP_ALLOC_UNBOUND, EVTCHNOP_SEND,
    EVTCHNOP_UNMASK, HYPERCALL_EVENT_CHANNEL_OP, HYPERCALL_MEMORY_OP, PortArgument, SharedInfo,
    XEN_PAGE_SIZE, XENMAPSPACE_SHARED_INFO, XENMEM_ADD_TO_PHYSMAP, XenError, is_xen_uid,
    take_events, xen_version,
};

use crate::arch::gic::{self, GicError};
use crate::arch::hypercall::{self, Probe, Xen};

/// The guest frame Xen's `shared_info` page is placed at: a page of our own BSS, never
/// touched by the guest before the hypercall (so no cache line of the RAM page it replaces is
/// dirty), mapped Normal write-back inner-shareable like the rest of the image's data.
#[repr(C, align(4096))]
struct SharedInfoPage(UnsafeCell<[u8; XEN_PAGE_SIZE as usize]>);

// SAFETY: the guest never accesses the bytes through this static; after
// `XENMEM_add_to_physmap` they are Xen's `shared_info`, reached only through `&SharedInfo`
// (atomics).
unsafe impl Sync for SharedInfoPage {}

static SHARED_INFO_PAGE: SharedInfoPage = SharedInfoPage(UnsafeCell::new([0; 4096]));

/// How the guest knows Xen is there.
#[derive(Clone, Copy, Debug)]
pub enum Evidence {
    /// The device tree's `/hypervisor` node.
    HypervisorNode,
    /// The SMCCC hypervisor-service UID.
    SmcccUid,
    /// The `xen_version` hypercall answered with a Xen version.
    XenVersion(u16, u16),
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Evidence::HypervisorNode => "/hypervisor node",
            Evidence::SmcccUid => "SMCCC hypervisor UID",
            Evidence::XenVersion(major, minor) => {
                return write!(f, "xen_version {major}.{minor}");
            }
        })
    }
}

/// Why the guest runs without events.
#[derive(Debug)]
pub enum Unavailable {
    /// No sign of Xen (e.g. bare QEMU): no `/hypervisor` node, and the SMCCC hypervisor UID
    /// (when it could be asked) was not Xen's.
    NoXen {
        /// What the UID and version queries answered (`None`: not asked).
        answers: Option<(Probe, Probe)>,
    },
    /// Xen, but the tree describes no GIC the guest drives.
    NoGic,
    /// Xen, but the tree's GIC or `/hypervisor` node is malformed.
    Tree(sramlink::devicetree::DtError),
    /// A hypercall failed.
    Xen(XenError),
    /// The GIC could not be set up.
    Gic(GicError),
}

fn describe_probe(f: &mut fmt::Formatter<'_>, probe: &Probe) -> fmt::Result {
    match probe {
        Probe::Undefined => f.write_str("undefined (no hypervisor)"),
        Probe::Answered([x0, ..]) if *x0 as i64 == -1 => f.write_str("not supported"),
        Probe::Answered([x0, ..]) if (*x0 as i64) < 0 => write!(f, "error {}", *x0 as i64),
        Probe::Answered([x0, x1, x2, x3]) => {
            write!(f, "{x0:#x} {x1:#x} {x2:#x} {x3:#x}")
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::NoXen { answers: None } => f.write_str(
                "no Xen: no /hypervisor node, and hvc is not safe to try (not entered at EL1 \
                 with PSCI on hvc)",
            ),
            Unavailable::NoXen {
                answers: Some((uid, version)),
            } => {
                f.write_str("no Xen: no /hypervisor node, SMCCC hypervisor UID ")?;
                describe_probe(f, uid)?;
                f.write_str(", xen_version ")?;
                describe_probe(f, version)
            }
            Unavailable::NoGic => f.write_str("the device tree describes no GICv2/GICv3"),
            Unavailable::Tree(error) => error.fmt(f),
            Unavailable::Xen(error) => error.fmt(f),
            Unavailable::Gic(error) => error.fmt(f),
        }
    }
}

/// Working event channel to dom0.
pub struct Events {
    xen: Xen,
    /// The port dom0 binds (published in the ring header).
    pub port: u32,
    /// The upcall INTID.
    pub upcall: u32,
    /// Where the Xen check came from.
    pub evidence: Evidence,
    /// The GIC in use.
    pub gic: GicFrames,
    shared: &'static SharedInfo,
}

static EVENTS: Once<Events> = Once::new();
/// Events taken on our port.
static RECEIVED: AtomicU64 = AtomicU64::new(0);
/// Events taken on other ports (none expected).
static OTHER: AtomicU64 = AtomicU64::new(0);
/// Notifications sent.
static SENT: AtomicU64 = AtomicU64::new(0);

/// Whether Xen is the hypervisor, and how that is known.
pub fn detect(platform: &Platform, entry_el: u64) -> Result<(Xen, Evidence), Unavailable> {
    if platform.hypervisor.is_some() {
        // SAFETY: Xen builds the domU's tree and adds `/hypervisor` ("xen,xen") to it.
        return Ok((unsafe { Xen::new_unchecked() }, Evidence::HypervisorNode));
    }
    if entry_el != 1 || platform.psci != Some(PsciConduit::Hvc) {
        return Err(Unavailable::NoXen { answers: None });
    }
    // SAFETY: entered at EL1 with PSCI on `hvc`: what sits at EL2 answers SMCCC on `hvc`, or
    // there is no EL2 and the probe's undefined `hvc` is skipped by the exception handler.
    let uid = unsafe { hypercall::hypervisor_uid() };
    if let Probe::Answered([x0, x1, x2, x3]) = uid {
        if is_xen_uid([x0 as u32, x1 as u32, x2 as u32, x3 as u32]) {
            // SAFETY: the hypervisor identified itself with Xen's UID.
            return Ok((unsafe { Xen::new_unchecked() }, Evidence::SmcccUid));
        }
    }
    // SAFETY: as above; on a hypervisor that is not Xen, `hvc #0xea1` is an SMCCC call with
    // function ID 0 (x0), which SMCCC answers NOT_SUPPORTED.
    let version = unsafe { hypercall::xen_version() };
    if let Probe::Answered([x0, ..]) = version {
        if let Some((major, minor)) = xen_version(x0) {
            // SAFETY: `hvc #0xea1`, Xen's hypercall, answered with a Xen version.
            let xen = unsafe { Xen::new_unchecked() };
            return Ok((xen, Evidence::XenVersion(major, minor)));
        }
    }
    Err(Unavailable::NoXen {
        answers: Some((uid, version)),
    })
}

/// Sets up the event channel: shared_info, the port for dom0, the upcall.
///
/// # Safety
///
/// Called once, with the MMU on and the tree's GIC frames mapped Device-nGnRE for the
/// kernel's life (`kernel_init` maps them).
pub unsafe fn start(
    platform: &Platform,
    xen: Xen,
    evidence: Evidence,
) -> Result<&'static Events, Unavailable> {
    let gic = match &platform.gic {
        None => return Err(Unavailable::NoGic),
        Some(Err(error)) => return Err(Unavailable::Tree(error.clone())),
        Some(Ok(controller)) => controller.frames,
    };
    let upcall = match &platform.hypervisor {
        Some(Ok(node)) => node.upcall_intid,
        Some(Err(error)) => return Err(Unavailable::Tree(error.clone())),
        None => XEN_DEFAULT_UPCALL_INTID,
    };
    let page = SHARED_INFO_PAGE.0.get() as u64;
    let mut physmap = AddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: XENMAPSPACE_SHARED_INFO,
        idx: 0,
        gpfn: page / XEN_PAGE_SIZE,
    };
    xen.call(
        "XENMEM_add_to_physmap(shared_info)",
        HYPERCALL_MEMORY_OP,
        XENMEM_ADD_TO_PHYSMAP,
        &mut physmap,
    )
    .map_err(Unavailable::Xen)?;
    // SAFETY: the page is now Xen's shared_info (identity-mapped Normal WB, 4 KiB, aligned);
    // `SharedInfo` covers its first 1072 bytes with atomics, the only way it is accessed.
    let shared: &'static SharedInfo = unsafe { &*(page as *const SharedInfo) };
    let mut unbound = AllocUnbound {
        dom: DOMID_SELF,
        remote_dom: DOM0,
        port: 0,
    };
    xen.call(
        "EVTCHNOP_alloc_unbound",
        HYPERCALL_EVENT_CHANNEL_OP,
        EVTCHNOP_ALLOC_UNBOUND,
        &mut unbound,
    )
    .map_err(Unavailable::Xen)?;
    let port = unbound.port;
    let mut unmask = PortArgument { port };
    xen.call(
        "EVTCHNOP_unmask",
        HYPERCALL_EVENT_CHANNEL_OP,
        EVTCHNOP_UNMASK,
        &mut unmask,
    )
    .map_err(Unavailable::Xen)?;
    let events = EVENTS.call_once(|| Events {
        xen,
        port,
        upcall,
        evidence,
        gic,
        shared,
    });
    // SAFETY: once; the GIC frames are mapped (this function's contract).
    unsafe { gic::init(&gic, upcall, on_upcall) }.map_err(Unavailable::Gic)?;
    Ok(events)
}

/// The upcall handler (IRQ vector, interrupts masked): takes every pending event.
fn on_upcall() {
    let Some(events) = EVENTS.get() else {
        return;
    };
    take_events(events.shared, |port| {
        let counter = if port == events.port {
            &RECEIVED
        } else {
            &OTHER
        };
        counter.fetch_add(1, Ordering::Relaxed);
    });
}

impl Events {
    /// The GIC's version and distributor, for the boot log.
    pub fn gic_summary(&self) -> (&'static str, PhysRange) {
        match self.gic {
            GicFrames::V2 { distributor, .. } => ("GICv2", distributor),
            GicFrames::V3 { distributor, .. } => ("GICv3", distributor),
        }
    }

    /// Notifies dom0 (`EVTCHNOP_send` on our port). A failure is counted, not fatal: the
    /// peer's own timeouts bound a lost wake-up, and its polling fallback still sees the data.
    pub fn notify(&self) -> Result<(), XenError> {
        let mut send = PortArgument { port: self.port };
        self.xen
            .call(
                "EVTCHNOP_send",
                HYPERCALL_EVENT_CHANNEL_OP,
                EVTCHNOP_SEND,
                &mut send,
            )
            .map(|_| {
                SENT.fetch_add(1, Ordering::Relaxed);
            })
    }
}

/// (events received on our port, on other ports, notifications sent).
pub fn counters() -> (u64, u64, u64) {
    (
        RECEIVED.load(Ordering::Relaxed),
        OTHER.load(Ordering::Relaxed),
        SENT.load(Ordering::Relaxed),
    )
}
