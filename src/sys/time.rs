//! C `strftime` for the bundled time server (`servers::Strftime`): Python's
//! `time.strftime` is this very call, so rendering through it is the only
//! way to match Python byte for byte.

use std::io;

unsafe extern "C" {
    /// POSIX `tzset`, missing from the libc crate on Linux.
    fn tzset();
}

/// Renders the current local time (`TZ` honoured) with C `strftime` in the
/// process's locale — "C" for a Rust program, which never calls
/// `setlocale`. Returns `None` when the result is longer than `max` bytes;
/// an empty result is a result (C's strftime returns 0 for both, so the
/// format is given a leading space that is taken off again).
///
/// # Errors
/// `InvalidInput` if `format` contains NUL; the OS's if it cannot give the
/// local time.
pub(crate) fn strftime_now(format: &str, max: usize) -> io::Result<Option<Vec<u8>>> {
    let format = std::ffi::CString::new(format!(" {format}"))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the format contains NUL"))?;
    // SAFETY: tzset only reads the TZ variable and sets libc's globals; it
    // is idempotent and thread-safe in glibc and musl.
    unsafe { tzset() };
    // SAFETY: time(NULL) has no preconditions.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: an all-zero `tm` is a valid value of a plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is reentrant.
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return Err(io::Error::last_os_error());
    }
    // Room for the leading space and the NUL that strftime writes too.
    let limit = max + 2;
    let mut size = 256.min(limit);
    loop {
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` has room for `size` bytes; `format` is NUL-terminated;
        // `tm` was filled by localtime_r. strftime writes at most `size` bytes.
        let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), size, format.as_ptr(), &tm) };
        if n > 0 {
            buf.truncate(n);
            buf.remove(0); // the space
            return Ok(Some(buf));
        }
        if size >= limit {
            return Ok(None);
        }
        size = (size * 4).min(limit);
    }
}
