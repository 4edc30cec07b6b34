//! The connection under a session: a TCP stream (SMTP, or LMTP over the
//! network) or a UNIX stream (LMTP to a local socket), both connected by
//! the connector and made non-blocking here.
//!
//! Trusts: the connector for the descriptor.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

/// A connected, non-blocking stream.
#[derive(Debug)]
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    /// A TCP connection from the connector's descriptor.
    pub fn tcp(fd: OwnedFd) -> io::Result<Conn> {
        let s = std::net::TcpStream::from(fd);
        s.set_nonblocking(true)?;
        Ok(Conn::Tcp(TcpStream::from_std(s)))
    }

    /// A UNIX stream connection from the connector's descriptor.
    pub fn unix(fd: OwnedFd) -> io::Result<Conn> {
        let s = std::os::unix::net::UnixStream::from(fd);
        s.set_nonblocking(true)?;
        Ok(Conn::Unix(UnixStream::from_std(s)))
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown(how),
            Conn::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Unix(s) => s.flush(),
        }
    }
}

impl Source for Conn {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.register(registry, token, interests),
            Conn::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.reregister(registry, token, interests),
            Conn::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.deregister(registry),
            Conn::Unix(s) => s.deregister(registry),
        }
    }
}
