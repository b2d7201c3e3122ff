//! Sockets and addresses: the connected [`Stream`], the [`Listener`] it
//! comes from, the [`DatagramSocket`], binding, and socket files. Depends on
//! nothing in the crate above `sys` and `error`.

mod address;
pub(crate) mod bind;
mod datagram;
mod listener;
mod stream;

pub use address::Address;
pub use datagram::{DatagramSocket, MAX_UDP_PAYLOAD, MAX_UDP6_PAYLOAD, MAX_UNIX_DATAGRAM};
pub use listener::Listener;
pub use stream::Stream;
pub(crate) use stream::is_write_timeout;
