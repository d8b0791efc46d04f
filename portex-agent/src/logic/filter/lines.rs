//! `--lines`: one line per event, or one per connection (at its close, like tcplife)
//! plus every failure and pool_pressure alarm, for pipelines that pay per line. Pure.
use std::str::FromStr;

use crate::logic::model::{Action, Record};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Lines {
    /// connect, established, close, time_wait, bind and the failures: each a line.
    #[default]
    Events,
    /// A `connection` line at each close (with its start, duration, close kind and
    /// TIME_WAIT), and the failures.
    Connections,
}

impl Lines {
    /// The action this record's line has, or None when it has no line: in connections
    /// mode a close becomes the connection's line and the steps before it have none.
    pub(crate) fn action_of(self, r: &Record) -> Option<Action> {
        match (self, r.action) {
            (Lines::Events, a) => Some(a),
            (Lines::Connections, Action::Close) => Some(Action::Connection),
            (
                Lines::Connections,
                Action::Connect | Action::Established | Action::TimeWait | Action::Bind,
            ) => None,
            (Lines::Connections, a) => Some(a),
        }
    }
}

impl FromStr for Lines {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "events" => Ok(Lines::Events),
            "connections" => Ok(Lines::Connections),
            _ => Err(format!("expected events or connections, got {s}")),
        }
    }
}

impl TryFrom<String> for Lines {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::fixtures::record;

    #[test]
    fn connections_mode_keeps_one_line_per_connection_and_every_failure() {
        let of = |a: Action| {
            let r = record(a, (7, 7, "cli"), "10.0.0.1:40000", Some("10.0.0.9:80"));
            Lines::Connections.action_of(&r)
        };
        assert_eq!(of(Action::Connect), None);
        assert_eq!(of(Action::Established), None);
        assert_eq!(of(Action::TimeWait), None);
        assert_eq!(of(Action::Bind), None);
        assert_eq!(of(Action::Close), Some(Action::Connection));
        assert_eq!(of(Action::ConnectFailed), Some(Action::ConnectFailed));
        assert_eq!(of(Action::BindFailed), Some(Action::BindFailed));
        let r = record(Action::Connect, (7, 7, "cli"), "10.0.0.1:40000", None);
        assert_eq!(Lines::Events.action_of(&r), Some(Action::Connect));
        assert_eq!("connections".parse(), Ok(Lines::Connections));
        assert!("rows".parse::<Lines>().is_err());
    }
}
