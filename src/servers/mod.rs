//! The bundled servers' handlers: what `socketserver echo` and
//! `socketserver time` run, usable from any program.

mod echo;
mod time;

pub use echo::Echo;
pub use time::{DEFAULT_TIME_FORMAT, MAX_TIME_REQUEST, Strftime, TimeError, render_time};
