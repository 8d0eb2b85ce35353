//! `k8s-nokmem`: swap nokmem builds of runc and kubelet onto a Kubernetes node and verify
//! that kernel-memory accounting stays off. `main` only parses arguments, sets up logging,
//! dispatches and turns the result into an exit code.

use std::io::Write;
use std::process::ExitCode;

use k8s_nokmem::cli;
use k8s_nokmem::logging::Style;
use k8s_nokmem::notes;

fn main() -> ExitCode {
    let args = match cli::parse(std::env::args_os()) {
        Ok(args) => args,
        Err(err) => {
            // clap prints usage errors itself; --help/--version exit 0, misuse exits 2
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { cli::EXIT_ERROR } else { 0 });
        }
    };
    let style = Style::detect();
    cli::init_logging(&args, style);
    match cli::run(args) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(err) => {
            print_error_chain(&err, style);
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}

/// Print the error chain and its notes (see `notes`); under journald every line at error
/// priority.
fn print_error_chain(err: &anyhow::Error, style: Style) {
    let text = notes::error_report(err.as_ref(), &notes::of(err));
    let _ = std::io::stderr()
        .lock()
        .write_all(style.lines(log::Level::Error, &text).as_bytes());
}
