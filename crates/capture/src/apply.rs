//! The only IO of the crate: finding the tools, reading whether the namespace has IPv6, and
//! running a [`Plan`] in the current network namespace.

use std::{
    ffi::OsStr,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use crate::plan::{Backend, Plan, Repeat, Step, Tool};

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

/// The backend: `wanted`, or with `None` `iptables-restore` if `path` has it, else `nft`.
pub fn choose_backend(wanted: Option<Backend>, path: &OsStr) -> Result<Backend, ApplyError> {
    if let Some(backend) = wanted {
        return Ok(backend);
    }
    if find_program(Tool::IptablesRestore.program(), path).is_some() {
        Ok(Backend::Iptables)
    } else if find_program(Tool::Nft.program(), path).is_some() {
        Ok(Backend::Nft)
    } else {
        Err(ApplyError::NoBackend)
    }
}

/// Whether this process's network namespace has IPv6 (see [`crate::has_ipv6`]); without
/// `/proc/net/if_inet6` the kernel has no IPv6 at all.
pub fn namespace_has_ipv6() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|text| crate::has_ipv6(&text))
}

/// Runs every step of `plan` in order, stopping at the first failure.
pub fn run(plan: &Plan) -> Result<(), ApplyError> {
    for step in &plan.steps {
        match step.repeat {
            Repeat::Once => run_step(step)??,
            Repeat::WhileSucceeds => {
                let mut runs = 0;
                while run_step(step)?.is_ok() {
                    runs += 1;
                    if runs == MAX_REPEATS {
                        return Err(ApplyError::Endless {
                            command: step.command(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs one step once: `Err` when it could not start, `Ok(Err)` when it failed.
fn run_step(step: &Step) -> Result<Result<(), ApplyError>, ApplyError> {
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
        .stdout(Stdio::null())
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
        return Ok(Ok(()));
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
        assert_eq!(
            choose_backend(None, &path).expect("found"),
            Backend::Iptables
        );
        let (nft, path) = path_with(&["nft"]);
        assert_eq!(choose_backend(None, &path).expect("found"), Backend::Nft);
        let (none, path) = path_with(&[]);
        let err = choose_backend(None, &path).expect_err("neither");
        assert_eq!(
            err.to_string(),
            "neither iptables-restore nor nft was found on PATH"
        );
        let wanted = choose_backend(Some(Backend::Nft), &path).expect("as asked");
        assert_eq!(wanted, Backend::Nft);
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
            repeat: Repeat::Once,
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
            Ok(Ok(())) => panic!("`ip no-such-object` succeeded"),
        }
    }
}
