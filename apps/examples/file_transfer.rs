//! The file_transfer program: see `socketserver_apps::file_transfer`.

use socketserver_apps::{args, file_transfer};

fn main() {
    args::main("file_transfer", file_transfer::USAGE, file_transfer::parse_args, file_transfer::run)
}
