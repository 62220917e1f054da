fn main() {
    std::process::exit(wimguard::cli::run());
}
