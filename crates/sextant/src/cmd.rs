//! One module per subcommand.

pub mod analyze;
pub mod bootstrap;
pub mod ca;
pub mod crds;
pub mod create_remote_secret;
pub mod explain;
pub mod iptables;
pub mod output;
pub mod proxy_config;
pub mod proxy_status;
pub mod serve;
pub mod validate;

/// Writes `text` to standard output. A reader that stops early (`| head`) ends the output
/// quietly, with no panic and no error: what it read is what it wanted.
pub fn out(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
}
