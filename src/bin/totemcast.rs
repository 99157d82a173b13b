//! The `totemcast` command for Rust users and tests; the Python console script runs the same
//! code through the extension module.

fn main() {
    std::process::exit(totemcast::cli::main(std::env::args_os().skip(1).collect()));
}
