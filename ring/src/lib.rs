//! sramlink-ring: the shared-memory message ring.
#![no_std]
