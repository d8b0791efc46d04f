//! The config file: read with bounds, parsed as TOML whose keys are the agent's flags,
//! and the serde readers of values the file may write as a string or a number.
use std::{fmt::Display, io::Read, path::Path, str::FromStr};

use anyhow::{Context, Result, bail};
use clap::Args as _;
use serde::{Deserialize, Deserializer, de::Error as _};
use toml::{Spanned, de::DeTable};

use crate::{
    cmd::cli::{AgentArgs, FilterArgs},
    logic::limits,
};

/// A value of the file as a string or a number, read as its flag reads the text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Scalar),
    Many(Vec<Scalar>),
}

/// A key of the file parsed as its flag's value is (`duration = 30` or `"10m"`).
pub(crate) fn one<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    let text = Scalar::deserialize(d)?.text();
    text.parse().map(Some).map_err(D::Error::custom)
}

/// A list key: an array (`dport = [443, "8000-8100"]`) or, as on the command line and
/// in the environment, one comma-separated string (`dport = "443,8000-8100"`).
pub(crate) fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    let items: Vec<String> = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.text().split(',').map(str::to_string).collect(),
        OneOrMany::Many(v) => v.into_iter().map(Scalar::text).collect(),
    };
    items
        .iter()
        .map(|s| s.trim().parse().map_err(D::Error::custom))
        .collect()
}

/// Reads a regular file of at most CONFIG_FILE_BYTES (never /dev/zero or a FIFO).
pub(crate) fn load_file(path: &Path) -> Result<AgentArgs> {
    let ctx = || format!("reading config {}", path.display());
    let f = std::fs::File::open(path).with_context(ctx)?;
    if !f.metadata().with_context(ctx)?.file_type().is_file() {
        bail!("config {} is not a regular file", path.display());
    }
    let mut bytes = Vec::new();
    f.take(limits::CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(ctx)?;
    if bytes.len() as u64 > limits::CONFIG_FILE_BYTES {
        bail!(
            "config {} is larger than {}",
            path.display(),
            limits::human(limits::CONFIG_FILE_BYTES)
        );
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("config {} is not UTF-8 text", path.display()))?;
    parse_file(path, &text)
}

/// The TOML text of a config file. Its keys are the agent's flags (`_` for `-`); the
/// filter keys are read into `filter`, each key keeping its line for error messages.
pub fn parse_file(path: &Path, text: &str) -> Result<AgentArgs> {
    let at = |span: Option<std::ops::Range<usize>>, msg: &str| {
        let line = span
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .map(|l| format!("line {l}: "))
            .unwrap_or_default();
        anyhow::anyhow!("config {}: {line}{msg}", path.display())
    };
    let error = |e: toml::de::Error| at(e.span(), e.message());
    let table = DeTable::parse(text).map_err(error)?;
    let span = table.span();
    // The keys are the flags' ids: one list for the command line and the file.
    let keys = |c: clap::Command| -> Vec<String> {
        c.get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| id != "config")
            .collect()
    };
    let filter_keys = keys(FilterArgs::augment_args(clap::Command::new("filter")));
    let agent_keys = keys(AgentArgs::augment_args(clap::Command::new("agent")));
    let (mut agent, mut filter) = (DeTable::new(), DeTable::new());
    for (k, v) in table.into_inner() {
        let key = k.get_ref().to_string();
        if filter_keys.contains(&key) {
            filter.insert(k, v);
        } else if agent_keys.contains(&key) {
            agent.insert(k, v);
        } else {
            return Err(at(
                Some(k.span()),
                &format!(
                    "unknown key `{key}` (the keys are the flags of `portex agent --help`, with _ for -)"
                ),
            ));
        }
    }
    let part = |t| toml::Deserializer::from(Spanned::new(span.clone(), t));
    let mut args = AgentArgs::deserialize(part(agent)).map_err(error)?;
    args.filter = FilterArgs::deserialize(part(filter)).map_err(error)?;
    Ok(args)
}
