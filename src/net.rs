//! Socket calls std has no way to make: a send or a peek that never
//! waits, whatever mode the socket is in.
//!
//! Switching a socket between blocking and non-blocking costs a system
//! call each way. A connection a worker holds is read with a blocking,
//! timed read (the one wait std offers a single socket) and written far
//! more often than it has to wait; with `MSG_DONTWAIT` the write needs no
//! switch, so a kept-alive request costs one read and one write.

use std::io;
use std::mem::MaybeUninit;
use std::net::TcpStream;

use socket2::SockRef;

/// Sends what the socket's buffer takes now; `WouldBlock` when it is
/// full. Never raises `SIGPIPE` (a library embedding this may not ignore
/// it as the binary does).
pub fn send_now(stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    SockRef::from(stream).send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
}

/// Whether a connection that should be quiet is: nothing to read, not
/// closed, no error. A byte waiting, end of file or an error all say it
/// cannot be used for another exchange. The byte is only peeked at.
pub fn is_quiet(stream: &TcpStream) -> bool {
    let mut byte = [MaybeUninit::<u8>::uninit()];
    loop {
        match SockRef::from(stream).recv_with_flags(&mut byte, libc::MSG_DONTWAIT | libc::MSG_PEEK)
        {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
            Ok(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    /// On a blocking socket, a send that does not fit returns at once.
    #[test]
    fn send_now_does_not_wait_on_a_blocking_socket() {
        let (client, mut server) = pair();
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        let err = loop {
            match send_now(&client, &chunk) {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
            assert!(sent < 1 << 30, "the socket never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let mut got = vec![0; sent];
        server.read_exact(&mut got).unwrap();
        assert!(got.iter().all(|&b| b == 7));
    }

    /// Sending to a peer that is gone is an error, not a signal.
    #[test]
    fn send_now_to_a_closed_peer_fails_quietly() {
        let (client, server) = pair();
        drop(server);
        let failed = (0..100).any(|_| send_now(&client, b"x").is_err());
        assert!(failed);
    }

    #[test]
    fn is_quiet_tells_idle_from_data_and_close() {
        let (client, mut server) = pair();
        assert!(is_quiet(&client));
        server.write_all(b"x").unwrap();
        // The byte takes a moment on loopback: wait for it without
        // consuming it.
        client.peek(&mut [0]).unwrap();
        assert!(!is_quiet(&client));
        assert!(!is_quiet(&client), "peeking left the byte in place");
        let (client, server) = pair();
        drop(server);
        client.peek(&mut [0]).unwrap();
        assert!(!is_quiet(&client));
    }
}
