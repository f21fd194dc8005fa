//! Xen's guest interface as the guest uses it: hypercall numbers, argument structures,
//! `shared_info`, and the 2-level event-channel scan (pure logic, tested on the host).
//!
//! Sources: Xen's `public/xen.h`, `public/event_channel.h`, `public/memory.h`,
//! `public/arch-arm.h` (the arm64 layouts: `xen_ulong_t` is 64 bits) and
//! `../shared/docs/evtchn-notes.md` (checked on Xen 4.17). The hypercall itself (`hvc #0xEA1`)
//! is in `arch/aarch64/hypercall.rs`.
//!
//! ```text
//!  shared_info page (4 KiB, one per domain)        the guest maps it Normal WB inner-shareable
//!  0x000 vcpu_info[0]: upcall_pending u8 @0, upcall_mask u8 @1, pending_sel u64 @8, time @16
//!  0x030 evtchn_pending[64]  u64: bit p%64 of word p/64 = port p pending
//!  0x230 evtchn_mask[64]     u64: bit set = port masked (pending, but no upcall)
//! ```
//! Xen sets a port's pending bit, then (when the port is unmasked) its word's bit in
//! `pending_sel`, then `upcall_pending`, and raises the upcall PPI. [`take_events`] undoes it in
//! the opposite order, as Linux's 2-level handler does.

use core::fmt;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// `__HYPERVISOR_memory_op`.
pub const HYPERCALL_MEMORY_OP: u64 = 12;
/// `__HYPERVISOR_xen_version`.
pub const HYPERCALL_XEN_VERSION: u64 = 17;
/// `XENVER_version`: returns major << 16 | minor.
pub const XENVER_VERSION: u64 = 0;
/// `__HYPERVISOR_event_channel_op`.
pub const HYPERCALL_EVENT_CHANNEL_OP: u64 = 32;
/// The `hvc` immediate Xen recognises as a hypercall on Arm.
pub const HYPERCALL_IMMEDIATE: u16 = 0xea1;

/// `XENMEM_add_to_physmap`.
pub const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
/// `XENMAPSPACE_shared_info`.
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
/// `EVTCHNOP_send`.
pub const EVTCHNOP_SEND: u64 = 4;
/// `EVTCHNOP_alloc_unbound`.
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
/// `EVTCHNOP_unmask`.
pub const EVTCHNOP_UNMASK: u64 = 9;
/// `DOMID_SELF`.
pub const DOMID_SELF: u16 = 0x7ff0;
/// dom0's domain id: the peer's side of the channel.
pub const DOM0: u16 = 0;
/// Xen's page size on Arm (`XEN_PAGE_SIZE`): the unit of guest frame numbers.
pub const XEN_PAGE_SIZE: u64 = 4096;
/// Event-channel words (`sizeof(xen_ulong_t) * 8` on arm64).
pub const EVENT_WORDS: usize = 64;
/// Ports per word.
pub const PORTS_PER_WORD: usize = 64;
/// Ports the 2-level ABI has (4096 on arm64).
pub const MAX_PORTS: usize = EVENT_WORDS * PORTS_PER_WORD;

/// SMCCC `Call UID` query of the vendor-specific hypervisor service (fast call, SMC32).
pub const SMCCC_HYPERVISOR_CALL_UID: u64 = 0x8600_ff01;
/// Xen's hypervisor service UID `a71812dc-c698-4369-9acf-79d18ddee667`, as the four 32-bit
/// words w0-w3 Xen's `fill_uid` returns (each word the UID's next four bytes, first byte in the
/// low-order bits: SMCCC's rule).
pub const XEN_SMCCC_UID: [u32; 4] = [0xdc12_18a7, 0x6943_98c6, 0xd179_cf9a, 0x67e6_de8d];
/// The same UID as Xen before 4.11 returned it (`ARM_SMCCC_UID`: the UUID's fields as numbers).
pub const XEN_SMCCC_UID_BEFORE_4_11: [u32; 4] =
    [0xa718_12dc, 0xc698_4369, 0x9acf_79d1, 0x8dde_e667];

/// The (major, minor) version a `xen_version(XENVER_version)` result says, if it is a
/// plausible Xen version (major 3 to 9: Xen 3.0 onwards; negative results are errors).
pub fn xen_version(result: u64) -> Option<(u16, u16)> {
    let (major, minor) = ((result >> 16) as u16, result as u16);
    (result >> 32 == 0 && (3..=9).contains(&major)).then_some((major, minor))
}

/// Whether the words an SMCCC hypervisor `Call UID` returned name Xen.
pub fn is_xen_uid(words: [u32; 4]) -> bool {
    words == XEN_SMCCC_UID || words == XEN_SMCCC_UID_BEFORE_4_11
}

/// `struct xen_add_to_physmap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddToPhysmap {
    /// Domain (`DOMID_SELF`).
    pub domid: u16,
    /// Pages for `XENMAPSPACE_gmfn_range`; 0 otherwise.
    pub size: u16,
    /// Which space (`XENMAPSPACE_shared_info`).
    pub space: u32,
    /// Index into the space (0: the shared_info page).
    pub idx: u64,
    /// Guest frame number where it appears.
    pub gpfn: u64,
}

/// `struct evtchn_alloc_unbound`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocUnbound {
    /// The allocating domain (`DOMID_SELF`).
    pub dom: u16,
    /// The domain allowed to bind the port.
    pub remote_dom: u16,
    /// Out: the new port.
    pub port: u32,
}

/// `struct evtchn_send` and `struct evtchn_unmask`: one port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortArgument {
    /// The local port.
    pub port: u32,
}

const _: () = assert!(size_of::<AddToPhysmap>() == 24);
const _: () = assert!(offset_of!(AddToPhysmap, space) == 4);
const _: () = assert!(offset_of!(AddToPhysmap, idx) == 8);
const _: () = assert!(offset_of!(AddToPhysmap, gpfn) == 16);
const _: () = assert!(size_of::<AllocUnbound>() == 8);
const _: () = assert!(offset_of!(AllocUnbound, remote_dom) == 2);
const _: () = assert!(offset_of!(AllocUnbound, port) == 4);
const _: () = assert!(size_of::<PortArgument>() == 4);

/// `struct vcpu_info` on arm64 (48 bytes).
#[repr(C)]
pub struct VcpuInfo {
    /// Set by Xen when an upcall is due; cleared by the guest before scanning.
    pub upcall_pending: AtomicU8,
    /// Unused on Arm (the GIC masks the upcall).
    pub upcall_mask: AtomicU8,
    _pad: [u8; 6],
    /// Bit w set: `evtchn_pending[w]` may have unmasked pending ports.
    pub pending_sel: AtomicU64,
    /// `struct vcpu_time_info` (unused here).
    _time: [u64; 4],
}

/// The start of `struct shared_info` on arm64, up to the end of `evtchn_mask` (the rest of
/// the page holds wall-clock time and `arch_shared_info`, unused here).
#[repr(C)]
pub struct SharedInfo {
    /// `vcpu_info[0]` (the guest has one vCPU; Arm's `XEN_LEGACY_MAX_VCPUS` is 1).
    pub vcpu0: VcpuInfo,
    /// Pending bits, one per port.
    pub evtchn_pending: [AtomicU64; EVENT_WORDS],
    /// Mask bits, one per port.
    pub evtchn_mask: [AtomicU64; EVENT_WORDS],
}

const _: () = assert!(size_of::<VcpuInfo>() == 48);
const _: () = assert!(offset_of!(VcpuInfo, pending_sel) == 8);
const _: () = assert!(offset_of!(SharedInfo, evtchn_pending) == 48);
const _: () = assert!(offset_of!(SharedInfo, evtchn_mask) == 560);
const _: () = assert!(size_of::<SharedInfo>() == 1072);
const _: () = assert!(size_of::<SharedInfo>() as u64 <= XEN_PAGE_SIZE);

/// Takes every unmasked pending event from `shared` and calls `fired` with its port.
///
/// Order (Xen's is the reverse): clear `upcall_pending`; take `pending_sel` atomically (a word
/// Xen marks after this is seen at the next upcall); for each selected word, clear exactly the
/// pending bits that are not masked. A bit Xen sets between the load and the clear stays set,
/// with its `pending_sel` bit set again by Xen, so it is taken at the next upcall: no event is
/// lost, none is reported twice. Masked pending ports stay pending (delivered once unmasked).
///
/// Returns how many ports fired.
pub fn take_events(shared: &SharedInfo, mut fired: impl FnMut(u32)) -> usize {
    // All SeqCst: Xen's updates on another CPU use full-barrier atomics; these are the
    // inner-shareable `ldaxr`/`stlxr` (and `dmb ish`) that pair with them on the shared_info
    // page, which the guest maps Normal write-back inner-shareable.
    shared.vcpu0.upcall_pending.store(0, Ordering::SeqCst);
    let mut selected = shared.vcpu0.pending_sel.swap(0, Ordering::SeqCst);
    let mut count = 0;
    while selected != 0 {
        let word = selected.trailing_zeros() as usize;
        selected &= selected - 1;
        let pending = shared.evtchn_pending[word].load(Ordering::SeqCst);
        let ready = pending & !shared.evtchn_mask[word].load(Ordering::SeqCst);
        if ready == 0 {
            continue;
        }
        shared.evtchn_pending[word].fetch_and(!ready, Ordering::SeqCst);
        let mut bits = ready;
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            fired((word * PORTS_PER_WORD + bit) as u32);
            count += 1;
        }
    }
    count
}

/// A failed hypercall: Xen's negative errno.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct XenError {
    /// The operation, for the message.
    pub operation: &'static str,
    /// The value Xen returned in x0 (negative).
    pub code: i64,
}

impl XenError {
    /// `result` as Xen returned it: `Ok` when not negative.
    pub fn check(operation: &'static str, result: i64) -> Result<u64, XenError> {
        if result < 0 {
            Err(XenError {
                operation,
                code: result,
            })
        } else {
            Ok(result as u64)
        }
    }
}

impl fmt::Display for XenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match -self.code {
            1 => "EPERM",
            2 => "ENOENT",
            3 => "ESRCH",
            12 => "ENOMEM",
            13 => "EACCES",
            16 => "EBUSY",
            22 => "EINVAL",
            28 => "ENOSPC",
            38 => "ENOSYS",
            _ => "error",
        };
        write!(f, "Xen {} failed: {} ({name})", self.operation, self.code)
    }
}

#[cfg(test)]
mod tests {
    use std::boxed::Box;
    use std::vec::Vec;

    use super::*;

    fn shared_info() -> Box<SharedInfo> {
        // SAFETY: every field is an integer or an atomic integer: all-zero is a valid value.
        unsafe { Box::new(core::mem::zeroed()) }
    }

    /// Does what Xen's `evtchn_2l_set_pending` does for `port`.
    fn xen_raises(shared: &SharedInfo, port: usize) {
        let (word, bit) = (port / PORTS_PER_WORD, port % PORTS_PER_WORD);
        shared.evtchn_pending[word].fetch_or(1 << bit, Ordering::SeqCst);
        if shared.evtchn_mask[word].load(Ordering::SeqCst) & (1 << bit) == 0 {
            shared
                .vcpu0
                .pending_sel
                .fetch_or(1 << word, Ordering::SeqCst);
            shared.vcpu0.upcall_pending.store(1, Ordering::SeqCst);
        }
    }

    fn take(shared: &SharedInfo) -> Vec<u32> {
        let mut ports = Vec::new();
        let count = take_events(shared, |port| ports.push(port));
        assert_eq!(count, ports.len());
        ports
    }

    #[test]
    fn pending_unmasked_ports_are_taken_once_in_order() {
        let shared = shared_info();
        for port in [1, 63, 64, 700, 4095] {
            xen_raises(&shared, port);
        }
        assert_eq!(take(&shared), [1, 63, 64, 700, 4095]);
        assert_eq!(shared.vcpu0.upcall_pending.load(Ordering::SeqCst), 0);
        assert_eq!(shared.vcpu0.pending_sel.load(Ordering::SeqCst), 0);
        assert!(
            shared
                .evtchn_pending
                .iter()
                .all(|word| word.load(Ordering::SeqCst) == 0)
        );
        assert_eq!(take(&shared), [] as [u32; 0]);
    }

    #[test]
    fn masked_ports_stay_pending_until_unmasked_and_raised() {
        let shared = shared_info();
        shared.evtchn_mask[0].store(1 << 5, Ordering::SeqCst);
        xen_raises(&shared, 5);
        xen_raises(&shared, 6);
        assert_eq!(take(&shared), [6]);
        assert_eq!(shared.evtchn_pending[0].load(Ordering::SeqCst), 1 << 5);
        // A selector bit for a word whose only pending port is masked yields nothing.
        shared.vcpu0.pending_sel.store(1, Ordering::SeqCst);
        assert_eq!(take(&shared), [] as [u32; 0]);
        // Unmasking (Xen re-raises on EVTCHNOP_unmask) delivers it.
        shared.evtchn_mask[0].store(0, Ordering::SeqCst);
        shared.vcpu0.pending_sel.fetch_or(1, Ordering::SeqCst);
        assert_eq!(take(&shared), [5]);
    }

    #[test]
    fn an_event_raised_during_the_scan_is_taken_by_the_next_one() {
        let shared = shared_info();
        xen_raises(&shared, 3);
        let mut first = Vec::new();
        take_events(&shared, |port| {
            first.push(port);
            // Xen raises port 4 (same word) while the guest handles port 3.
            xen_raises(&shared, 4);
        });
        assert_eq!(first, [3]);
        assert_eq!(shared.vcpu0.upcall_pending.load(Ordering::SeqCst), 1);
        assert_eq!(take(&shared), [4]);
    }

    #[test]
    fn xen_uid_in_both_encodings() {
        assert!(is_xen_uid(XEN_SMCCC_UID));
        assert!(is_xen_uid(XEN_SMCCC_UID_BEFORE_4_11));
        // KVM's hypervisor UID (28b46fb6-2ec5-11e9-a9ca-4b564d003a74).
        assert!(!is_xen_uid([
            0xb66f_b428,
            0xe911_c52e,
            0x564b_caa9,
            0x743a_004d
        ]));
        // SMCCC NOT_SUPPORTED in w0.
        assert!(!is_xen_uid([u32::MAX, 0, 0, 0]));
    }

    #[test]
    fn plausible_xen_versions_only() {
        assert_eq!(xen_version(0x0004_0011), Some((4, 17)));
        assert_eq!(xen_version(u64::MAX), None);
        assert_eq!(xen_version((-38i64) as u64), None);
        assert_eq!(xen_version(0), None);
        assert_eq!(xen_version(0x0001_0000), None);
    }

    #[test]
    fn errors_name_the_errno() {
        let error = XenError::check("EVTCHNOP_alloc_unbound", -22).unwrap_err();
        assert_eq!(
            std::string::ToString::to_string(&error),
            "Xen EVTCHNOP_alloc_unbound failed: -22 (EINVAL)"
        );
        assert_eq!(XenError::check("x", 7), Ok(7));
    }
}
