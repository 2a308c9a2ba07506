//! The `cometapi-keymon` binary; everything lives in the library (`cometapi_keymon::cli`).

fn main() -> std::process::ExitCode {
    cometapi_keymon::cli::main()
}
