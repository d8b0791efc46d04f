//! Rendering records as NDJSON (Elastic Common Schema names) or as human text. Pure.
pub mod json;
pub mod text;

use crate::model::Record;

/// A record with what user space added to it.
pub struct View<'a> {
    pub rec: &'a Record,
    /// Unix-epoch nanoseconds.
    pub unix_ns: i128,
    /// The process (thread-group leader) name; the thread's comm when unknown.
    pub process_name: &'a str,
}
