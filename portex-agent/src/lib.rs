//! portex: the agent. Pure modules (decode, lifecycle, model, format, filter, clock,
//! errno) know nothing of aya, tokio or IO and are unit-tested with synthetic events;
//! ebpf, host, reader, emitter, procinfo and the commands do the IO.
pub mod cli;
pub mod clock;
pub mod decode;
pub mod diagnose;
pub mod ebpf;
pub mod emitter;
pub mod errno;
pub mod filter;
pub mod format;
pub mod host;
pub mod lifecycle;
pub mod model;
pub mod netns;
pub mod owners;
pub mod pools;
pub mod procinfo;
pub mod reader;
pub mod report;
pub mod settings;
pub mod snapshot;
pub mod sockdiag;
pub mod status;
pub mod watch;
