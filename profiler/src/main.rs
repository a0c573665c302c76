//! The `cowprof` command: parse, dispatch, print errors, exit with a documented code (see
//! `cli/exit.rs`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
