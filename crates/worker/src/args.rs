//! The runtime's settings as command-line flags with `SPOOL_*` fallbacks
//! (feature `clap`), for binaries that embed the worker: flatten
//! [`WorkerArgs`] into the binary's own parser and call
//! [`WorkerArgs::config`]. The flags are made from [`SETTINGS`], so every
//! setting has its flag and none is dropped on the way. Values stay strings
//! until [`WorkerConfig`] parses them, so every error names its `SPOOL_*`
//! setting whether it came from a flag or the environment.

use std::collections::BTreeMap;

use crate::config::{ConfigError, WorkerConfig};
use crate::settings::SETTINGS;

/// The runtime's flags (`--redis-url`, `--lease`, …), each also read from
/// its `SPOOL_*` variable; flags win.
#[derive(Debug, Clone, Default)]
pub struct WorkerArgs {
    /// The values given, by variable name.
    values: BTreeMap<&'static str, String>,
}

impl WorkerArgs {
    /// The value given for the setting `var` (`SPOOL_CONCURRENCY`), by
    /// flag or variable.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.values.get(var).map(String::as_str)
    }

    /// Parses and checks every value, naming the setting of the first bad
    /// one.
    pub fn config(&self) -> Result<WorkerConfig, ConfigError> {
        WorkerConfig::from_lookup(|var| self.values.get(var).cloned())
    }
}

impl clap::FromArgMatches for WorkerArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut args = WorkerArgs::default();
        args.update_from_arg_matches(m)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        for s in &SETTINGS {
            if let Some(v) = m.get_one::<String>(s.var) {
                self.values.insert(s.var, v.clone());
            }
        }
        Ok(())
    }
}

impl clap::Args for WorkerArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        SETTINGS.iter().fold(cmd, |cmd, s| {
            cmd.arg(
                clap::Arg::new(s.var)
                    .long(s.flag)
                    .env(s.var)
                    .value_name("VALUE")
                    .help(format!(
                        "{} [default: {}]",
                        s.help,
                        s.default.replace('`', "")
                    )),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    /// Every setting given as its flag reaches the config, and a flag wins
    /// over the variable.
    #[test]
    fn every_flag_reaches_its_setting() -> Result<(), String> {
        for s in &SETTINGS {
            let cli = Cli::try_parse_from(["w", &format!("--{}", s.flag), "x"])
                .map_err(|e| format!("--{}: {e}", s.flag))?;
            if cli.worker.get(s.var) != Some("x") {
                return Err(format!("--{} did not reach {}", s.flag, s.var));
            }
        }
        let cli = Cli::try_parse_from(["w", "--concurrency", "3"]).map_err(|e| e.to_string())?;
        let c = cli.worker.config().map_err(|e| e.to_string())?;
        assert_eq!(c.concurrency, 3);
        Ok(())
    }
}
