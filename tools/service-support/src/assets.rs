//! Shell completions (bash, zsh, fish) and man pages generated from a
//! binary's clap definition.
//!
//! Each binary answers `BINARY --generate-cli-assets DIR` (only as its
//! first argument, before clap parses anything, so the option appears in
//! no help, completion or man page) by writing
//! `DIR/completions/{BINARY.bash,_BINARY,BINARY.fish}` and
//! `DIR/man/man1/BINARY.1` plus one page per subcommand (`BINARY-SUB.1`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;

/// The first argument that asks for the assets.
pub const FLAG: &str = "--generate-cli-assets";

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes the completions and man pages of `cmd` under `dir`; returns the
/// files written.
pub fn generate(mut cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, AssetError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AssetError::Io { path, source }
    };
    let name = cmd.get_name().to_string();
    let completions = dir.join("completions");
    let man = dir.join("man").join("man1");
    for d in [&completions, &man] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    let mut written = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd, &name, &completions)
            .map_err(io(&completions))?;
        written.push(path);
    }
    clap_mangen::generate_to(cmd, &man).map_err(io(&man))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .map_err(io(&man))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(&name) && f.ends_with(".1"))
        })
        .collect();
    pages.sort();
    written.extend(pages);
    Ok(written)
}

/// If the command line is `BINARY --generate-cli-assets DIR`, writes the
/// assets of `cmd()` and returns the exit status; otherwise `None`.
pub fn run_if_requested(cmd: impl FnOnce() -> clap::Command) -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(FLAG)) {
        return None;
    }
    let Some(dir) = args.next() else {
        eprintln!("usage: {FLAG} DIR");
        return Some(ExitCode::from(2));
    };
    Some(match generate(cmd(), Path::new(&dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_completions_and_a_page_per_subcommand() {
        let cmd = clap::Command::new("demo")
            .about("a demo")
            .arg(clap::Arg::new("state-dir").long("state-dir"))
            .subcommand(clap::Command::new("serve").about("serves"));
        let dir = tempfile::tempdir().expect("temp dir");
        let files = generate(cmd, dir.path()).expect("generated");
        let names: Vec<String> = files
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for want in ["demo.bash", "_demo", "demo.fish", "demo.1", "demo-serve.1"] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(dir.path().join("man/man1/demo-serve.1").is_file());
        let bash = std::fs::read_to_string(dir.path().join("completions/demo.bash"))
            .expect("bash completion");
        assert!(bash.contains("--state-dir") && bash.contains("serve"));
    }
}
