//! sramlink guest: host-testable logic.
#![cfg_attr(not(test), no_std)]
