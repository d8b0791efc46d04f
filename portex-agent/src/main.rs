//! The `portex` binary; everything is in the library (portex_agent::cmd).
fn main() {
    portex_agent::main()
}
