//! The `shmetrics` command line; see [`shmetrics::cli`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    shmetrics::cli::main()
}
