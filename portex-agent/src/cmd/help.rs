//! What `--help` and the man pages show after the flags: examples and exit statuses. A
//! paragraph that starts with "Examples:" becomes the man page's EXAMPLES section (kept
//! line by line), one that starts with "Exit status" its EXIT STATUS (examples/man.rs).
pub(super) const PORTEX: &str = "\
Exit status: 0 done; 1 an error (one line on stderr); 2 a usage error. `portex status`
differs, for scripts and monitoring plugins: 0 ok, 1 warning, 2 critical, 3 could not check.

Run `portex COMMAND --help` for each command's flags and examples.";

pub(super) const WATCH: &str = "\
Examples:
  portex watch                          every event, one line each, until Ctrl-C
  portex watch --json                   NDJSON (Elastic Common Schema names)
  portex watch --failures-only          only connect()/bind() failures and pool alarms
  portex watch -p 1234                  one process (--comm NAME: by name)
  portex watch --daddr 10.0.0.0/8 --dport 443,8000-8100
  portex watch --netns blue -4          one network namespace (ip netns name), IPv4 only
  portex watch --container 3f1c0e5d2b7a one container (its id, or a prefix of it)
  portex watch --count 100 --duration 1m --json > sample.ndjson

Exit status: 0 done (Ctrl-C, --count, --duration, the reader of the output left);
1 an error; 2 a usage error.";

pub(super) const STATUS: &str = "\
Examples:
  portex status                         this network namespace
  portex status --all-netns --json      every namespace, as JSON
  portex status --netns blue            one namespace: a name, an inode or a path
  portex status --warn 70 --critical 90 || page-oncall

Exit status (as monitoring plugins use it): 0 every pool below --warn; 1 a pool at or
above --warn; 2 a pool at or above --critical; 3 could not check (bad flags, no such
namespace, no access to /proc or the kernel's tables).";

pub(super) const TOP: &str = "\
Under the table, the selected row's detail: the pool's used, TIME_WAIT and free ports over
the last five minutes (the forecast drawn on until the pool is full, the first failure
marked), its top holders, and its diagnoses with their fixes as `portex status` words
them; for a process, the pool where it holds the largest share. --once prints the detail
of the fullest pool under the tables.

Keys: 1, 2 or tab switch the table; up/down or j/k select a row; enter gives the detail
the whole screen (up/down then scroll it, enter or esc go back); s sorts; p or space
pauses; / filters (part of a name, a pid, or part of a pool's route); q or esc quits.

Examples:
  portex top                            live view, refreshed every second (q quits)
  portex top --once --rows 10           one frame as text, for a ticket or a script

Exit status: 0 done; 1 an error; 2 a usage error.";

pub(super) const AGENT: &str = "\
Every setting is also a key of the --config file (the flag's name with _ for -) and an
environment variable (PORTEX_ and the key in upper case: PORTEX_ROTATE_SIZE=64M).
Precedence: flags, then the environment, then the file, then the defaults. A boolean
takes a value to turn off what the file turned on: --accepted=false.

Examples:
  portex agent --output /var/log/portex/events.ndjson --rotate-size 64M --metrics 9633
  portex agent --config /etc/portex/agent.toml --syscall-hooks on
  PORTEX_METRICS=127.0.0.1:9633 portex agent --failures-only
  portex agent --dport 5432 --count 1000 --output /tmp/db-connections.ndjson

Exit status: 0 done (SIGINT/SIGTERM, --count, --duration); 1 an error (a setting out of
bounds, an output that cannot be opened, no privileges); 2 a usage error.";

pub(super) const COMPLETIONS: &str = "\
Examples:
  portex completions bash > /etc/bash_completion.d/portex
  portex completions zsh > \"${fpath[1]}/_portex\"
  portex completions fish > ~/.config/fish/completions/portex.fish";
