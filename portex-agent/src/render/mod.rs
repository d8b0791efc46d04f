//! Rendering records as NDJSON (Elastic Common Schema names) or as human text. Pure.
#[cfg(test)]
mod golden_stream;
#[cfg(test)]
mod golden_tests;
pub(crate) mod json;
pub(crate) mod json_serde;
#[cfg(test)]
mod json_tests;
pub(crate) mod prometheus;
pub(crate) mod prometheus_nat;
pub(crate) mod status;
pub(crate) mod text;
pub(crate) mod top;
pub(crate) mod top_chart;
pub(crate) mod top_detail;
pub(crate) mod top_nat;

use crate::logic::model::Record;

/// A record with what user space added to it.
pub struct View<'a> {
    pub rec: &'a Record,
    /// Unix-epoch nanoseconds.
    pub unix_ns: i128,
    /// The process (thread-group leader) name; the thread's comm when unknown.
    pub process_name: &'a str,
}
