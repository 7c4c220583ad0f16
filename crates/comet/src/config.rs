//! `comet serve --config FILE`: the options of `serve` from a TOML file.
//!
//! The clap definitions stay the one schema: a key of the file is an
//! option's name in snake_case (`max_body = "2MiB"`, `public_channels =
//! ["lobby", "news.*"]`, `memory = true`), and each value goes through the
//! same parsing as on the command line. Precedence: defaults < file <
//! environment < flags. A key the command line or the environment already
//! sets is left to them (clap says where each value came from); the others
//! become command-line arguments placed before the user's own.
//!
//! An unknown key, a value of the wrong type or one the option refuses is
//! an error naming the file, the line and the key.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use toml::{Spanned, Value};

use crate::cli::Cli;

/// The command line as given, with a `serve --config FILE`'s keys added.
pub fn parse(argv: &[OsString]) -> anyhow::Result<Cli> {
    let matches = match Cli::command().try_get_matches_from(argv) {
        Ok(matches) => matches,
        // Help, version and usage errors print and exit as clap does.
        Err(error) => error.exit(),
    };
    let Some(("serve", serve)) = matches.subcommand() else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let Some(file) = serve.get_one::<PathBuf>("config") else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let added = arguments_from_file(file, serve)?;
    let merged = with_file_arguments(argv, &added);
    let matches = Cli::command()
        .try_get_matches_from(&merged)
        .map_err(|error| anyhow!("{}", first_line(&error.to_string())))?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// `argv` with `added` right after the `serve` subcommand, so the user's own
/// arguments come later.
fn with_file_arguments(argv: &[OsString], added: &[OsString]) -> Vec<OsString> {
    let at = argv
        .iter()
        .position(|arg| arg == "serve")
        .map_or(argv.len(), |index| index + 1);
    let mut merged = argv[..at].to_vec();
    merged.extend_from_slice(added);
    merged.extend_from_slice(&argv[at..]);
    merged
}

/// The command-line arguments standing for the file's keys that neither the
/// command line nor the environment sets.
fn arguments_from_file(path: &Path, serve: &ArgMatches) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("the configuration file {} cannot be read", path.display()))?;
    let table: BTreeMap<Spanned<String>, Spanned<Value>> = toml::from_str(&text)
        .map_err(|error| anyhow!("{}: {}", path.display(), error.to_string().trim_end()))?;
    let command = Cli::command();
    let serve_command = command
        .find_subcommand("serve")
        .expect("serve is a subcommand");
    let mut added = Vec::new();
    for (key, value) in table {
        let line = line_of(&text, key.span().start);
        let at = |reason: String| anyhow!("{}:{line}: {}: {reason}", path.display(), key.get_ref());
        let key_name = key.get_ref().as_str();
        // An option's flag in snake_case (`cors_origin`), or its name
        // (`cors_origins`).
        let Some(argument) = serve_command.get_arguments().find(|argument| {
            argument.get_long().is_some_and(|long| {
                long.replace('-', "_") == key_name || argument.get_id() == key_name
            })
        }) else {
            return Err(at(
                "unknown key (keys are the options of `comet serve` in snake_case, e.g. max_body)"
                    .into(),
            ));
        };
        let name = argument.get_id().as_str();
        if name == "config" {
            return Err(at("a configuration file cannot name another".into()));
        }
        if matches!(
            serve.value_source(name),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let long = format!("--{}", argument.get_long().expect("checked above"));
        let arguments = as_arguments(&long, argument.get_action(), value.get_ref()).map_err(at)?;
        check_alone(&arguments).map_err(at)?;
        added.extend(arguments.into_iter().map(OsString::from));
    }
    Ok(added)
}

/// What `value` means as command-line arguments of the option `long`.
fn as_arguments(long: &str, action: &ArgAction, value: &Value) -> Result<Vec<String>, String> {
    let scalar = |value: &Value| -> Result<String, String> {
        match value {
            Value::String(text) => Ok(text.clone()),
            Value::Integer(number) => Ok(number.to_string()),
            Value::Float(number) => Ok(number.to_string()),
            other => Err(format!(
                "expected a string or a number, found {}",
                other.type_str()
            )),
        }
    };
    match action {
        ArgAction::SetTrue => match value {
            Value::Boolean(true) => Ok(vec![long.to_string()]),
            Value::Boolean(false) => Ok(vec![]),
            other => Err(format!(
                "expected true or false, found {}",
                other.type_str()
            )),
        },
        ArgAction::Append => {
            let items: Vec<&Value> = match value {
                Value::Array(items) => items.iter().collect(),
                single => vec![single],
            };
            let mut arguments = Vec::new();
            for item in items {
                arguments.push(long.to_string());
                arguments.push(scalar(item)?);
            }
            Ok(arguments)
        }
        _ => Ok(vec![long.to_string(), scalar(value)?]),
    }
}

/// Parses one key's arguments alone, so a value the option refuses is
/// reported against its key and line.
fn check_alone(arguments: &[String]) -> Result<(), String> {
    let mut argv = vec!["comet".to_string(), "serve".to_string()];
    argv.extend_from_slice(arguments);
    match Cli::command().try_get_matches_from(&argv) {
        Ok(_) => Ok(()),
        Err(error) => Err(first_line(&error.to_string())
            .trim_start_matches("error: ")
            .to_string()),
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The options `serve` runs with, read again (for a reload): the same
/// command line, environment and file.
pub fn reread(argv: &[OsString]) -> anyhow::Result<crate::cli::ServeArgs> {
    match parse(argv)?.command {
        crate::cli::Command::Serve(args) => Ok(*args),
        _ => bail!("not a serve command line"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_arguments_go_before_the_users_own() {
        let merged = with_file_arguments(
            &os(&["comet", "serve", "--memory"]),
            &os(&["--max-body", "2MiB"]),
        );
        assert_eq!(
            merged,
            os(&["comet", "serve", "--max-body", "2MiB", "--memory"])
        );
    }

    #[test]
    fn values_become_arguments_by_the_options_kind() {
        assert_eq!(
            as_arguments("--memory", &ArgAction::SetTrue, &Value::Boolean(true)).unwrap(),
            ["--memory"]
        );
        assert!(
            as_arguments("--memory", &ArgAction::SetTrue, &Value::Boolean(false))
                .unwrap()
                .is_empty()
        );
        let list = Value::Array(vec![Value::String("a".into()), Value::String("b".into())]);
        assert_eq!(
            as_arguments("--public-channels", &ArgAction::Append, &list).unwrap(),
            ["--public-channels", "a", "--public-channels", "b"]
        );
        assert_eq!(
            as_arguments("--max-channels", &ArgAction::Set, &Value::Integer(8)).unwrap(),
            ["--max-channels", "8"]
        );
        let error = as_arguments(
            "--memory",
            &ArgAction::SetTrue,
            &Value::String("yes".into()),
        )
        .unwrap_err();
        assert!(error.contains("true or false"), "{error}");
    }

    #[test]
    fn lines_are_counted_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }
}
