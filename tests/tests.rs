//! The one integration test binary: every file beside this one is a module
//! of it, so the suite links once (ripgrep's tests/tests.rs). Each module
//! runs the real binary or real servers over loopback.

mod support;

mod bench;
mod centers;
mod check_centers;
mod check_programs;
mod classic;
mod cli;
mod durability;
mod hardening;
mod hosts;
mod interop;
mod live;
mod properties;
mod stalls;
mod store;
mod system;
mod walls;
