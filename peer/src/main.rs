//! sramlink-peer: the Linux end of the ring.
fn main() {}
