//! The man pages, generated from the clap definition (`portex_agent::cli_command`):
//! portex.1 and one page per subcommand (portex-watch.1, portex-status.1, ...), the
//! agent's environment variables and every command's examples included.
//!
//! `cargo xtask man` runs it: `cargo run -p portex-agent --example man -- DIR`. Kept out
//! of the `portex` binary (clap_mangen is a dev-dependency).
use std::{
    io,
    path::{Path, PathBuf},
};

use clap_mangen::{
    Man,
    roff::{Roff, roman},
};

/// One page: clap_mangen's sections, then the command's after-help split into
/// EXAMPLES (verbatim), EXIT STATUS and NOTES, instead of one reflowed EXTRA section.
fn page(cmd: &clap::Command) -> io::Result<(String, Vec<u8>)> {
    let after = cmd
        .get_after_help()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let man = Man::new(cmd.clone().after_help(None::<&str>))
        .source(format!("portex {}", env!("CARGO_PKG_VERSION")))
        .manual("portex manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut out)?;
    }
    let mut roff = Roff::default();
    for para in after.split("\n\n").filter(|p| !p.trim().is_empty()) {
        if let Some(body) = para.strip_prefix("Examples:\n") {
            roff.control("SH", ["EXAMPLES"]);
            roff.control("nf", []);
            for line in body.lines() {
                roff.text([roman(line)]);
            }
            roff.control("fi", []);
        } else {
            let title = if para.starts_with("Exit status") {
                "EXIT STATUS"
            } else {
                "NOTES"
            };
            roff.control("SH", [title]);
            roff.text([roman(para.replace('\n', " "))]);
        }
    }
    roff.to_writer(&mut out)?;
    // Subcommands have no version of their own (the title line carries it).
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    Ok((man.get_filename(), out))
}

/// portex.1 and one page per subcommand (portex-watch.1, ...) into `dir`.
fn write_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = portex_agent::cli_command().disable_help_subcommand(true);
    // Built, so that subcommands know their full names (portex-watch, `portex watch`).
    cmd.build();
    let mut paths = Vec::new();
    for c in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
        let (name, bytes) = page(c)?;
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        paths.push(path);
    }
    paths.sort();
    Ok(paths)
}

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: man DIR");
        std::process::exit(2);
    };
    match write_pages(Path::new(&dir)) {
        Ok(pages) => {
            for p in pages {
                println!("{}", p.display());
            }
        }
        Err(e) => {
            eprintln!(
                "man: error: writing the man pages to {}: {e}",
                dir.to_string_lossy()
            );
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn every_page_is_written_and_groff_reads_it_without_a_warning() {
        let dir = std::env::temp_dir().join(format!("portex-man-{}", std::process::id()));
        let pages = write_pages(&dir).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "portex-agent.1",
                "portex-completions.1",
                "portex-status.1",
                "portex-top.1",
                "portex-watch.1",
                "portex.1"
            ]
        );
        for p in &pages {
            let text = std::fs::read_to_string(p).unwrap();
            assert!(
                text.lines().any(|l| l.starts_with(".TH ")),
                "{}",
                p.display()
            );
        }
        let agent = std::fs::read_to_string(dir.join("portex-agent.1")).unwrap();
        assert!(
            agent.contains("PORTEX_ROTATE_SIZE"),
            "the environment is documented"
        );
        for section in ["EXAMPLES", "\"EXIT STATUS\"", "NOTES"] {
            assert!(agent.contains(&format!(".SH {section}\n")), "{section}");
        }
        // groff, where installed (the man page's own renderer): no warning at all.
        for p in &pages {
            let Ok(out) = Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-z"])
                .arg(p)
                .output()
            else {
                break;
            };
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && err.is_empty(),
                "{}: {:?} {err}",
                p.display(),
                out.status
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
