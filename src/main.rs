//! `k8s-nokmem`: swap nokmem builds of runc and kubelet onto a Kubernetes node and verify
//! that kernel-memory accounting stays off. `main` only parses arguments, sets up logging,
//! dispatches and turns the result into an exit code.

use std::io::Write;
use std::process::ExitCode;

use k8s_nokmem::cli;

fn main() -> ExitCode {
    let args = match cli::parse(std::env::args_os()) {
        Ok(args) => args,
        Err(err) => {
            // clap prints usage errors itself; --help/--version exit 0, misuse exits 2
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { cli::EXIT_ERROR } else { 0 });
        }
    };
    cli::init_logging(&args);
    match cli::run(args) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(err) => {
            print_error_chain(&err);
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}

/// Print the top error, then one `-> cause` line per source, then any `note:` lines.
fn print_error_chain(err: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "k8s-nokmem: error: {err}");
    for cause in err.chain().skip(1) {
        let _ = writeln!(stderr, "  -> {cause}");
    }
    for note in k8s_nokmem::notes::of(err) {
        let _ = writeln!(stderr, "note: {note}");
    }
}
