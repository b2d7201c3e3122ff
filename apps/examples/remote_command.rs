//! The remote_command program: see `socketserver_apps::remote_command`.

use socketserver_apps::{args, remote_command};

fn main() {
    args::main("remote_command", remote_command::USAGE, remote_command::parse_args, remote_command::run)
}
