//! Lines for people and scripts on stdout and stderr, each written whole.
//!
//! `eprintln!` hands stderr, which has no buffer, one piece of the line at a time (`serving
//! `, `http`, `://`, …): whoever reads a log as it grows (a supervisor, a script waiting for
//! the `serving` line to learn the port) could see half a line, and another process sharing
//! the stream could write between the pieces. Both it and `println!` also panic when the
//! stream is gone (a closed pipe). Here a line is formatted first and written with one
//! `write_all`, and a failure to write it is the caller's to handle.

use std::fmt;
use std::io::{self, Write};

/// Writes `line` and a newline to stderr in one write; a stderr that cannot be written
/// (closed, full) loses the line and nothing else: the command goes on.
pub(crate) fn err_line(line: fmt::Arguments<'_>) {
    let _ = whole_line(&mut io::stderr().lock(), line);
}

/// Writes `line` and a newline to stdout in one write.
///
/// # Errors
/// Stdout cannot be written (a closed pipe: `BrokenPipe`).
pub(crate) fn out_line(line: fmt::Arguments<'_>) -> io::Result<()> {
    whole_line(&mut io::stdout().lock(), line)
}

/// Formats `line` with a newline and writes it with one `write_all`, then flushes.
fn whole_line(out: &mut impl Write, line: fmt::Arguments<'_>) -> io::Result<()> {
    let mut text = line.to_string();
    text.push('\n');
    out.write_all(text.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each `write` call it gets.
    #[derive(Default)]
    struct Calls(Vec<Vec<u8>>);

    impl Write for Calls {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_of_many_pieces_is_one_write() {
        let mut calls = Calls::default();
        let (scheme, addr) = ("http", "127.0.0.1:8081");
        whole_line(
            &mut calls,
            format_args!("serving {scheme}://{addr}/metrics"),
        )
        .unwrap();
        assert_eq!(
            calls.0,
            [b"serving http://127.0.0.1:8081/metrics\n".to_vec()]
        );
    }
}
