//! portex kernel programs. One module per hook family; entry points are thin and call
//! `try_*` functions so that every early exit is an explicit `Option`/`Result` path.
#![no_std]
#![no_main]

mod bind;
mod connect;
mod diag;
mod maps;
mod retransmit;
mod sock_state;
mod syscall;
mod util;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
