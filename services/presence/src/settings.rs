//! The effective settings a role prints at start-up: one `NAME = value` line per setting,
//! named by its env var, with the value it ended up with (env var, flag or default) and
//! secrets masked. Read off the parsed command line itself, so every setting a role has is
//! listed and none can be forgotten.

use clap::{ArgMatches, Command};

/// What a secret shows as once set.
const MASK: &str = "****";
/// What a setting without a value shows as.
const UNSET: &str = "<unset>";

/// The settings of the subcommand chosen in `matches`, as `(env var, value)` in the order the
/// role declares them.
pub(crate) fn effective(command: &Command, matches: &ArgMatches) -> Vec<(String, String)> {
    let Some((name, chosen)) = matches.subcommand() else {
        return Vec::new();
    };
    let Some(sub) = command.find_subcommand(name) else {
        return Vec::new();
    };
    sub.get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_string_lossy().into_owned();
            let value = chosen
                .get_raw(arg.get_id().as_str())
                .map(|values| {
                    values
                        .map(|v| v.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|v| !v.is_empty());
            let shown = match value {
                None => UNSET.to_owned(),
                Some(_) if arg.is_hide_env_values_set() => MASK.to_owned(),
                Some(v) => v,
            };
            Some((env, shown))
        })
        .collect()
}

/// The settings as printed: a heading, then one aligned `NAME = value` line each.
pub(crate) fn render(role: &str, settings: &[(String, String)]) -> String {
    let width = settings.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = format!("presence {role}: effective settings\n");
    for (name, value) in settings {
        out.push_str(&format!("  {name:<width$} = {value}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::{Arg, ArgAction};

    use super::*;

    fn command() -> Command {
        Command::new("presence").subcommand(
            Command::new("edge")
                .arg(
                    Arg::new("addr")
                        .long("addr")
                        .env("TEST_SETTINGS_ADDR")
                        .default_value("127.0.0.1:3000"),
                )
                .arg(
                    Arg::new("secret")
                        .long("secret")
                        .env("TEST_SETTINGS_SECRET")
                        .hide_env_values(true),
                )
                .arg(
                    Arg::new("key-file")
                        .long("key-file")
                        .env("TEST_SETTINGS_KEY_FILE"),
                )
                .arg(
                    Arg::new("proxies")
                        .long("proxy")
                        .env("TEST_SETTINGS_PROXIES")
                        .action(ArgAction::Append),
                )
                .arg(
                    Arg::new("verbose")
                        .long("verbose")
                        .action(ArgAction::SetTrue),
                ),
        )
    }

    #[test]
    fn every_setting_is_named_by_its_env_var_with_secrets_masked() {
        let matches = command()
            .try_get_matches_from([
                "presence", "edge", "--secret", "hunter2", "--proxy", "10.0.0.1", "--proxy",
                "10.0.0.2",
            ])
            .unwrap();
        let settings = effective(&command(), &matches);
        assert_eq!(
            settings,
            [
                ("TEST_SETTINGS_ADDR".into(), "127.0.0.1:3000".into()),
                ("TEST_SETTINGS_SECRET".into(), MASK.into()),
                ("TEST_SETTINGS_KEY_FILE".into(), UNSET.into()),
                ("TEST_SETTINGS_PROXIES".into(), "10.0.0.1,10.0.0.2".into()),
            ]
        );
        let text = render("edge", &settings);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("\n  TEST_SETTINGS_ADDR     = 127.0.0.1:3000\n"),
            "{text}"
        );
    }

    #[test]
    fn an_unset_secret_says_so() {
        let matches = command()
            .try_get_matches_from(["presence", "edge"])
            .unwrap();
        let settings = effective(&command(), &matches);
        assert!(settings.contains(&("TEST_SETTINGS_SECRET".into(), UNSET.into())));
    }
}
