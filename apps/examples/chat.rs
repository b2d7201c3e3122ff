//! The chat program: see `socketserver_apps::chat`.

use socketserver_apps::{args, chat};

fn main() {
    args::main("chat", chat::USAGE, chat::parse_args, chat::run)
}
