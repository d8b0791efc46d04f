#![no_std]
// Only here so that portex-agent can list this crate as a build-dependency; the
// programs are in the `portex` binary target (main.rs).
