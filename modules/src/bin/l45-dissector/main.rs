//! `l45-dissector`: generates the inverse module of one customization-module
//! instance, a Wireshark Lua dissector, from the instance's kind and
//! parameters (see `docs/dissectors.md` and the wire formats in
//! `docs/modules.md`).
//!
//! ```text
//! l45-dissector KIND [name=value ...] [--port N]... > KIND.lua
//! l45-dissector --all DIR
//! ```
//!
//! Parameters are the YANG leaf names of the kind's parameter container and
//! go through [`Params::parse`], so they are refused exactly as the taps
//! refuse them. `--port N` also binds the dissector to port N (UDP for the DNS
//! kinds, TCP for the stream tag, both for the app-id tag), ahead of the
//! dissector registered there (e.g. `dns` on 53), which still gets the
//! traffic the module did not customize. Without it only heuristics run.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

mod lua;

use l45_modules::{Kind, Params};
use lua::generate;

/// Clearance code used by `--all`, which has no instance to take one from
/// (the kind has no default). Documented in `docs/dissectors.md`.
pub const EXAMPLE_CLEARANCE_CODE: &str = "0123456789abcdefghijklmnopqrstuv";

/// Generates the Wireshark Lua dissector (the inverse module) of one
/// Layer 4.5 customization-module instance, on stdout.
///
/// Parameters are the YANG leaf names of the kind's parameter container
/// (e.g. tag=XTAGXdig) and are refused exactly as the taps refuse them;
/// omitted ones take the model's defaults. Load the output with
/// `tshark -X lua_script:FILE` or put it in Wireshark's plugin folder.
#[derive(Debug, Parser)]
#[command(name = "l45-dissector", version, max_term_width = 100)]
struct Cli {
    /// Module kind whose dissector to generate.
    #[arg(value_name = "KIND", value_parser = KindParser, required_unless_present = "all")]
    kind: Option<Kind>,
    /// The instance's parameters, NAME=VALUE with the YANG leaf name.
    #[arg(value_name = "NAME=VALUE", requires = "kind")]
    params: Vec<String>,
    /// Also bind the dissector to port N (UDP for the DNS kinds, TCP for
    /// stream-tag, both for app-id-tag), ahead of the dissector registered
    /// there, which still gets what the module did not customize
    /// (repeatable). Without it only heuristics run.
    #[arg(long = "port", value_name = "N", value_parser = parse_port, requires = "kind")]
    ports: Vec<u16>,
    /// Write the dissector of every kind, with default parameters, as
    /// DIR/KIND.lua instead.
    #[arg(long, value_name = "DIR", conflicts_with = "kind", value_hint = clap::ValueHint::DirPath)]
    all: Option<PathBuf>,
}

/// Module kind names, offered to completions and refused with the list of
/// known kinds.
#[derive(Clone, Copy)]
struct KindParser;

impl TypedValueParser for KindParser {
    type Value = Kind;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Kind, clap::Error> {
        let name = value.to_string_lossy();
        Kind::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            cmd.clone().error(
                ErrorKind::InvalidValue,
                format!("unknown module kind '{name}' (known: {})", known.join(", ")),
            )
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            Kind::ALL.iter().map(|k| PossibleValue::new(k.name())),
        ))
    }
}

/// A command-line error: printed on stderr, exit code 2.
#[derive(Debug)]
enum CliError {
    /// The command line does not parse (clap's message and usage).
    Usage(clap::Error),
    /// It parses, but the kind refuses its parameters or ports.
    Invalid(String),
}

/// What the command line asks for (one per run: its size does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
enum Command {
    One {
        kind: Kind,
        params: Params,
        ports: Vec<u16>,
    },
    All {
        dir: PathBuf,
    },
}

/// `args` without the program name.
fn parse_args<I, T>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv = std::iter::once(std::ffi::OsString::from("l45-dissector"))
        .chain(args.into_iter().map(Into::into));
    let cli = Cli::try_parse_from(argv).map_err(CliError::Usage)?;
    if let Some(dir) = cli.all {
        return Ok(Command::All { dir });
    }
    // clap requires one of the two.
    let Some(kind) = cli.kind else {
        return Err(CliError::Usage(
            Cli::command().error(ErrorKind::MissingRequiredArgument, "no module kind given"),
        ));
    };
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for arg in &cli.params {
        let Some((name, value)) = arg.split_once('=') else {
            return Err(CliError::Invalid(format!(
                "'{arg}' is not a parameter: write name=value with the YANG leaf name, e.g. tag=XTAGXdig"
            )));
        };
        pairs.push((name, value));
    }
    let params = Params::parse(kind, pairs.iter().copied()).map_err(|e| {
        let names: Vec<&str> = pairs.iter().map(|(n, _)| *n).collect();
        CliError::Invalid(format!(
            "{}: {e} (parameters given: {})",
            kind.name(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ))
    })?;
    let mut ports = cli.ports;
    if kind == Kind::RateLimit && !ports.is_empty() {
        return Err(CliError::Invalid(
            "rate-limit puts no bytes on the wire, so there is nothing to bind to a port".into(),
        ));
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(Command::One {
        kind,
        params,
        ports,
    })
}

fn parse_port(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("bad port '{value}': expected 1..65535")),
    }
}

/// Default parameters of `kind` for `--all`.
fn default_params(kind: Kind) -> Result<Params, CliError> {
    let pairs: &[(&str, &str)] = match kind {
        Kind::DnsClearanceFilter => &[("code", EXAMPLE_CLEARANCE_CODE)],
        _ => &[],
    };
    Params::parse(kind, pairs.iter().copied())
        .map_err(|e| CliError::Invalid(format!("{}: default parameters refused: {e}", kind.name())))
}

fn write_all(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        CliError::Invalid(format!("cannot create directory {}: {e}", dir.display()))
    })?;
    let mut written = Vec::new();
    for kind in Kind::ALL {
        let lua = generate(kind, &default_params(kind)?, &[]);
        let path = dir.join(format!("{}.lua", kind.name()));
        std::fs::write(&path, lua)
            .map_err(|e| CliError::Invalid(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

fn main() -> ExitCode {
    if let Some(code) = l45_service::assets::run_if_requested(Cli::command) {
        return code;
    }
    let result = parse_args(std::env::args_os().skip(1)).and_then(|cmd| match cmd {
        Command::One {
            kind,
            params,
            ports,
        } => {
            print!("{}", generate(kind, &params, &ports));
            Ok(())
        }
        Command::All { dir } => {
            for path in write_all(&dir)? {
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Help and --version (stdout, 0) and usage errors (stderr, 2).
        Err(CliError::Usage(e)) => e.exit(),
        Err(CliError::Invalid(msg)) => {
            eprintln!("l45-dissector: {msg}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lua::{lua_str, proto_name};

    fn one(list: &[&str]) -> String {
        match parse_args(list) {
            Ok(Command::One {
                kind,
                params,
                ports,
            }) => generate(kind, &params, &ports),
            other => panic!("{list:?}: {other:?}"),
        }
    }

    #[test]
    fn dns_tag_dissector_carries_the_instance_tag_and_position() {
        let lua = one(&["dns-middle-tag", "tag=MyTag42", "--port", "53"]);
        assert!(lua.contains("local TAG = \"MyTag42\""), "{lua}");
        assert!(lua.contains("local POSITION = \"middle\""));
        assert!(lua.contains("Proto(\"l45_dns_middle_tag\""));
        assert!(lua.contains("ProtoField.string(\"l45_dns_middle_tag.tag\""));
        assert!(lua.contains("local PORTS = { 53 }"));
        assert!(lua.contains("proto:register_heuristic(\"udp\""));
        assert!(!lua.contains("register_heuristic(\"tcp\""));
        assert!(!lua.contains('@'), "unfilled placeholder:\n{lua}");
        // Defaults come from the YANG model via Params::parse.
        let lua = one(&["dns-front-tag"]);
        assert!(lua.contains("local TAG = \"XTAGXdig\""));
        assert!(lua.contains("local PORTS = {  }"));
    }

    #[test]
    fn every_kind_generates_with_defaults_and_no_placeholder_left() {
        for kind in Kind::ALL {
            let params = default_params(kind).expect("defaults");
            let lua = generate(kind, &params, &[]);
            assert!(
                lua.contains(&format!("Proto(\"{}\"", proto_name(kind))),
                "{kind:?}"
            );
            assert!(!lua.contains('@'), "{kind:?}: unfilled placeholder");
        }
        let lua = generate(
            Kind::DnsClearanceFilter,
            &default_params(Kind::DnsClearanceFilter).expect("code"),
            &[],
        );
        assert!(lua.contains(&lua_str(EXAMPLE_CLEARANCE_CODE.as_bytes())));
    }

    #[test]
    fn stream_app_id_compression_and_rate_carry_their_parameters() {
        let lua = one(&["stream-tag", "interval=64", "tag=STREAMTAG"]);
        assert!(lua.contains("local INTERVAL = 64"));
        assert!(lua.contains("local TAG = \"STREAMTAG\""));
        assert!(lua.contains("l45_stream_tag.count"));
        assert!(lua.contains("register_postdissector(proto)"));
        assert!(!lua.contains("register_heuristic"));
        let lua = one(&["stream-tag", "--port", "8443"]);
        assert!(lua.contains("local PORTS = { 8443 }"));

        let lua = one(&["app-id-tag", "label=blue", "--port", "5300"]);
        assert!(lua.contains("local LABEL = \"blue\""));
        assert!(lua.contains("local MAGIC = \"XTAG\""));
        assert!(lua.contains("l45_app_id.name") && lua.contains("l45_app_id.label"));
        assert!(
            lua.contains("register_heuristic(\"udp\"")
                && lua.contains("register_heuristic(\"tcp\"")
        );
        assert!(lua.contains("local MAX_BODY = 80"));

        let lua = one(&["dns-compression", "recursion-desired=false"]);
        assert!(lua.contains("local MARKER = 0xA5"));
        assert!(lua.contains("local RECURSION_DESIRED = false"));
        assert!(lua.contains("l45_dns_compression.qname"));

        let lua = one(&["rate-limit", "delay=250"]);
        assert!(lua.contains("local DELAY_MS = 250"));
        assert!(!lua.contains("register_heuristic"));
        assert!(!lua.contains("proto.dissector"));
    }

    #[test]
    fn tags_are_escaped_into_exact_lua_literals() {
        assert_eq!(lua_str(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(lua_str(b"\n\x7f\x001"), r#""\010\127\0001""#);
        assert_eq!(lua_str("é".as_bytes()), r#""\195\169""#);
        let lua = one(&["dns-end-tag", "tag=x\"]]--"]);
        assert!(lua.contains(r#"local TAG = "x\"]]--""#), "{lua}");
    }

    #[test]
    fn bad_parameters_are_refused_like_the_taps_refuse_them() {
        let err = |list: &[&str]| match parse_args(list) {
            Err(CliError::Invalid(msg)) => msg,
            Err(CliError::Usage(e)) => e.to_string(),
            other => panic!("{list:?} accepted: {other:?}"),
        };
        let usage = |list: &[&str]| match parse_args(list) {
            Err(CliError::Usage(e)) => e.kind(),
            other => panic!("{list:?} is not a usage error: {other:?}"),
        };
        assert!(err(&["dns-front-tag", "tag="]).contains("bad value for parameter tag"));
        assert!(err(&["stream-tag", "interval=15"]).contains("bad value for parameter interval"));
        assert!(err(&["stream-tag", "interval=x"]).contains("bad value for parameter interval"));
        assert!(err(&["rate-limit", "tag=x"]).contains("parameter not known to this kind"));
        assert!(err(&["dns-clearance-filter"]).contains("parameter code is required"));
        assert!(
            err(&["dns-clearance-filter", "code=short"]).contains("bad value for parameter code")
        );
        assert!(err(&["dns-tag"]).contains("unknown module kind 'dns-tag'"));
        assert!(err(&["dns-front-tag", "XTAG"]).contains("not a parameter"));
        assert!(err(&["dns-front-tag", "--port", "0"]).contains("bad port"));
        assert!(err(&["dns-front-tag", "--port", "70000"]).contains("bad port"));
        assert!(err(&["rate-limit", "--port", "53"]).contains("no bytes on the wire"));
        assert_eq!(usage(&["dns-front-tag", "--port"]), ErrorKind::InvalidValue);
        assert_eq!(
            usage(&["dns-front-tag", "--verbose"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(usage(&[]), ErrorKind::MissingRequiredArgument);
        assert_eq!(usage(&["--all"]), ErrorKind::InvalidValue);
        assert_eq!(
            usage(&["--all", "a", "stream-tag"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(usage(&["--help"]), ErrorKind::DisplayHelp);
        // Kind names are exact, and ports are deduplicated.
        assert_eq!(usage(&["DNS-FRONT-TAG"]), ErrorKind::InvalidValue);
        match parse_args(["app-id-tag", "--port", "9", "--port=9", "--port", "7"]) {
            Ok(Command::One { ports, .. }) => assert_eq!(ports, vec![7, 9]),
            other => panic!("{other:?}"),
        }
        match parse_args(["--all", "some/dir"]) {
            Ok(Command::All { dir }) => assert_eq!(dir, Path::new("some/dir")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn all_writes_one_file_per_kind() {
        let dir = std::env::temp_dir().join(format!("l45-dissector-test-{}", std::process::id()));
        let written = write_all(&dir).expect("write");
        assert_eq!(written.len(), Kind::ALL.len());
        for kind in Kind::ALL {
            let text =
                std::fs::read_to_string(dir.join(format!("{}.lua", kind.name()))).expect("read");
            assert!(text.contains(proto_name(kind)));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
