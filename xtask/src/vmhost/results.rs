//! The guest's result lines (guest/lib.sh writes them to ttyS0), read back from the
//! serial log. A line may follow a kernel message on the same line of the log (the
//! console and the checks share the port), so a line is found by its tag, anywhere.
#[derive(Debug, PartialEq)]
pub(super) struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Default, PartialEq)]
pub(super) struct Results {
    pub checks: Vec<Check>,
    /// `VMHOST TIME <phase> <seconds>`: how long each group of checks took in the guest.
    pub times: Vec<(String, u64)>,
    /// `VMHOST DONE`: the script reached its end.
    pub done: bool,
}

impl Results {
    pub fn failed(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.ok).collect()
    }
}

pub(super) fn parse(serial: &str) -> Results {
    let mut r = Results::default();
    for line in serial.lines() {
        let Some(at) = line.find("VMHOST ") else {
            continue;
        };
        let words: Vec<&str> = line[at..].trim_end().splitn(5, ' ').collect();
        match words[..] {
            ["VMHOST", "CHECK", name, verdict, ..] => r.checks.push(Check {
                name: name.to_owned(),
                ok: verdict == "ok",
                detail: words.get(4).copied().unwrap_or_default().to_owned(),
            }),
            ["VMHOST", "TIME", phase, secs, ..] => {
                if let Ok(s) = secs.parse() {
                    r.times.push((phase.to_owned(), s));
                }
            }
            ["VMHOST", "DONE", ..] => r.done = true,
            _ => {}
        }
    }
    r
}

/// The last `n` lines of the serial log, for a failure's report.
pub(super) fn tail(serial: &str, n: usize) -> String {
    let lines: Vec<&str> = serial.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_among_the_console_s() {
        let log = "[  OK  ] Started foo.\r\n\
                   VMHOST START 2026-12-08T10:00:00Z kernel 6.1.0-40-amd64\n\
                   VMHOST CHECK deb-install ok Setting up portex (0.1.0) ...\n\
                   [  12.3] random: crng init doneVMHOST CHECK unit-active FAIL failed: no tracefs\n\
                   VMHOST CHECK image-load ok\n\
                   VMHOST TIME unit 42\n\
                   VMHOST DONE\n";
        let r = parse(log);
        assert_eq!(r.checks.len(), 3);
        assert_eq!(r.checks[0].detail, "Setting up portex (0.1.0) ...");
        assert_eq!(
            r.failed(),
            [&Check {
                name: "unit-active".into(),
                ok: false,
                detail: "failed: no tracefs".into()
            }]
        );
        assert_eq!(r.checks[2].detail, "");
        assert_eq!(r.times, [("unit".to_owned(), 42)]);
        assert!(r.done);
    }

    #[test]
    fn a_log_cut_short_is_not_done() {
        let r = parse("VMHOST CHECK deb-install ok\nVMHOST CHECK unit-act");
        assert!(!r.done);
        // The cut line is no check: the run fails as not done, not as a check.
        assert_eq!(r.checks.len(), 1);
    }
}
