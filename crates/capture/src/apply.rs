//! The only IO of the crate: finding the tools, reading whether the namespace has IPv6 and
//! what earlier runs left there, and running a [`Plan`] in the current network namespace.

use std::{
    ffi::OsStr,
    io::{ErrorKind, Write},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use crate::{
    Ipv6Interface, iptables,
    plan::{Backend, Cleanup, Plan, Repeat, Step, Tool},
};

/// A deletion that keeps succeeding this often is not deleting what it should.
const MAX_REPEATS: usize = 100;

/// Why a capture could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Automatic backend choice found neither tool.
    #[error("neither iptables-restore nor nft was found on PATH")]
    NoBackend,
    /// A program could not be started (most often: not installed).
    #[error("running {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A program failed.
    #[error("{command} failed ({status}): {}", stderr.trim_end())]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to standard error.
        stderr: String,
        /// What it was given on standard input.
        stdin: Option<String>,
    },
    /// A deletion kept succeeding.
    #[error("{command} still succeeded after {MAX_REPEATS} runs")]
    Endless {
        /// The command line.
        command: String,
    },
}

/// `program` in a directory of `path` (a `PATH` value), if there is one.
pub fn find_program(program: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The backend automatic choice made, and the program that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectedBackend {
    /// The backend.
    pub backend: Backend,
    /// Where its program is.
    pub program: PathBuf,
}

/// The automatic choice of backend: `iptables-restore` if `path` (a `PATH` value) has it,
/// else `nft`.
pub fn detect_backend(path: &OsStr) -> Result<DetectedBackend, ApplyError> {
    [
        (Backend::Iptables, Tool::IptablesRestore),
        (Backend::Nft, Tool::Nft),
    ]
    .into_iter()
    .find_map(|(backend, tool)| {
        let program = find_program(tool.program(), path)?;
        Some(DetectedBackend { backend, program })
    })
    .ok_or(ApplyError::NoBackend)
}

/// What this process's network namespace has of IPv6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceIpv6 {
    /// An address a Pod is reached at (see [`crate::ipv6_address`]).
    Address(Ipv6Interface),
    /// Loopback and link-local addresses only.
    LocalOnly,
    /// No `/proc/net/if_inet6`: the kernel has no IPv6.
    Unsupported,
}

/// Reads `/proc/net/if_inet6`.
pub fn namespace_ipv6() -> NamespaceIpv6 {
    match std::fs::read_to_string("/proc/net/if_inet6") {
        Err(_) => NamespaceIpv6::Unsupported,
        Ok(text) => {
            crate::ipv6_address(&text).map_or(NamespaceIpv6::LocalOnly, NamespaceIpv6::Address)
        }
    }
}

/// Runs `plan`: its cleanup, then every step in order, stopping at the first failure.
pub fn run(plan: &Plan) -> Result<(), ApplyError> {
    for cleanup in &plan.cleanup {
        match cleanup {
            Cleanup::Iptables(family) => remove_iptables_leftovers(*family)?,
            Cleanup::Delete { step, repeat } => delete(step, *repeat)?,
        }
    }
    for step in &plan.steps {
        run_step(step)??;
    }
    Ok(())
}

/// Reads the family's tables with `iptables-save` and deletes what an earlier run left.
/// When `iptables-save` is missing or fails (a kernel without IPv6), nothing is read: then
/// no rules can have been added with `iptables-restore` either.
fn remove_iptables_leftovers(family: crate::Family) -> Result<(), ApplyError> {
    let save = Step {
        tool: Tool::save(family),
        args: Vec::new(),
        stdin: None,
    };
    let saved = match run_step(&save) {
        Err(ApplyError::Spawn { source, .. }) if source.kind() == ErrorKind::NotFound => {
            return Ok(());
        }
        Err(error) => return Err(error),
        Ok(Err(_)) => return Ok(()),
        Ok(Ok(saved)) => saved,
    };
    let Some(input) = iptables::leftovers(&saved) else {
        return Ok(());
    };
    let args = vec!["--noflush".to_string()];
    let tool = Tool::restore(family);
    let stdin = Some(input);
    run_step(&Step { tool, args, stdin })??;
    Ok(())
}

/// Runs a deletion: once, or while it succeeds. Its failure, or a missing program, means
/// there is nothing (more) to delete.
fn delete(step: &Step, repeat: Repeat) -> Result<(), ApplyError> {
    let mut runs = 0;
    loop {
        match run_step(step) {
            Err(ApplyError::Spawn { source, .. }) if source.kind() == ErrorKind::NotFound => {
                return Ok(());
            }
            Err(error) => return Err(error),
            Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) if repeat == Repeat::Once => return Ok(()),
            Ok(Ok(_)) => {}
        }
        runs += 1;
        if runs == MAX_REPEATS {
            let command = step.command();
            return Err(ApplyError::Endless { command });
        }
    }
}

/// Runs one step once: `Err` when it could not start, `Ok(Err)` when it failed, else its
/// standard output.
fn run_step(step: &Step) -> Result<Result<String, ApplyError>, ApplyError> {
    let command = step.command();
    let spawn_error = |source| ApplyError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = Command::new(step.tool.program())
        .args(&step.args)
        .stdin(if step.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(input), Some(mut stdin)) = (&step.stdin, child.stdin.take()) {
        // The inputs are a few kilobytes, well within a pipe's buffer, and the tools read
        // all of their input before they write anything. A tool that exits without reading
        // it all closes the pipe: its status and standard error say why.
        match stdin.write_all(input.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(spawn_error(e)),
            _ => {}
        }
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    if output.status.success() {
        return Ok(Ok(String::from_utf8_lossy(&output.stdout).into_owned()));
    }
    Ok(Err(ApplyError::Failed {
        command,
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        stdin: step.stdin.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of empty programs, as a `PATH`.
    fn path_with(programs: &[&str]) -> (PathBuf, std::ffi::OsString) {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "sextant-capture-path-{}-{}",
            std::process::id(),
            programs.join("+")
        ));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        for program in programs {
            let file = dir.join(program);
            std::fs::write(&file, "#!/bin/sh\n").expect("write program");
            let executable = std::fs::Permissions::from_mode(0o755);
            std::fs::set_permissions(&file, executable).expect("make it executable");
        }
        let path = dir.clone().into_os_string();
        (dir, path)
    }

    #[test]
    fn automatic_choice_prefers_iptables_then_nft_and_names_both_when_neither_is_there() {
        let (both, path) = path_with(&["iptables-restore", "nft"]);
        let found = detect_backend(&path).expect("found");
        assert_eq!(found.backend, Backend::Iptables);
        assert_eq!(found.program, both.join("iptables-restore"));
        let (nft, path) = path_with(&["nft"]);
        let found = detect_backend(&path).expect("found");
        assert_eq!(found.backend, Backend::Nft);
        assert_eq!(found.program, nft.join("nft"));
        let (none, path) = path_with(&[]);
        let err = detect_backend(&path).expect_err("neither");
        assert_eq!(
            err.to_string(),
            "neither iptables-restore nor nft was found on PATH"
        );
        for dir in [both, nft, none] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn a_failing_step_reports_its_command_and_standard_error() {
        let (dir, _) = path_with(&[]);
        let err = run_step(&Step {
            tool: Tool::Ip,
            args: vec!["no-such-object".into()],
            stdin: None,
        });
        let _ = std::fs::remove_dir_all(dir);
        match err {
            // Without iproute2 the spawn fails, and says which program.
            Err(spawn) => assert!(spawn.to_string().starts_with("running ip no-such-object")),
            Ok(Err(failed)) => {
                let text = failed.to_string();
                assert!(text.starts_with("ip no-such-object failed"), "{text}");
                assert!(text.contains("no-such-object"), "{text}");
            }
            Ok(Ok(_)) => panic!("`ip no-such-object` succeeded"),
        }
    }
}
