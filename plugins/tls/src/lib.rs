//! TLS handshake decoder plugin for wasmtap.
//!
//! One exchange per handshake: the ClientHello is the request, the
//! handshake's outcome the response, so handshake latency and failures are
//! metrics like any other. The ClientHello gives the SNI (`server.address`),
//! the ALPN offered and the JA4 fingerprint; the ServerHello the negotiated
//! version (`supported_versions` for 1.3), cipher and ALPN. The handshake
//! succeeds at the server's ChangeCipherSpec (TLS 1.2, full or resumed), or
//! at the client's first encrypted record after the ServerHello (1.3); it
//! fails at a cleartext fatal alert, or (1.3) when the client's first
//! encrypted record has an alert's size (19 bytes: 2 + content type + tag).
//! Records are cut by the SDK's framing adapter; handshake messages are
//! reassembled across records and segments. Everything after the handshake
//! is encrypted and only skipped.

pub mod hello;

use hello::{ClientHello, ServerHello};
use wasmtap_sdk::framing::{Frame, FrameHandler, Framed, Framing, LengthField};
use wasmtap_sdk::{
    Attribute, CloseReason, DecodeError, Decoder, Descriptor, Direction, Message, Transport,
};

/// The TLS decoder.
pub struct Tls;

/// Attribute keys.
pub mod keys {
    /// SNI.
    pub const SERVER: &str = "server.address";
    /// SNI, as the TLS conventions name it.
    pub const SERVER_NAME: &str = "tls.client.server_name";
    /// JA4 fingerprint of the ClientHello.
    pub const JA4: &str = "tls.client.ja4";
    /// JA3 fingerprint of the ClientHello.
    pub const JA3: &str = "tls.client.ja3";
    /// JA3S fingerprint of the ServerHello.
    pub const JA3S: &str = "tls.server.ja3s";
    /// ALPN protocols offered, comma-separated.
    pub const ALPN_OFFERED: &str = "wasmtap.tls.alpn_offered";
    /// `tls`.
    pub const PROTOCOL: &str = "tls.protocol.name";
    /// `1.2`, `1.3`.
    pub const VERSION: &str = "tls.protocol.version";
    /// Negotiated cipher suite (IANA name).
    pub const CIPHER: &str = "tls.cipher";
    /// ALPN chosen.
    pub const NEXT_PROTOCOL: &str = "tls.next_protocol";
    /// A session was resumed.
    pub const RESUMED: &str = "tls.resumed";
    /// The handshake completed.
    pub const ESTABLISHED: &str = "tls.established";
    /// `requested` or `sent` (TLS 1.2; encrypted in 1.3).
    pub const CLIENT_CERT: &str = "wasmtap.tls.client_certificate";
    /// The server asked for another ClientHello (HelloRetryRequest).
    pub const RETRY: &str = "wasmtap.tls.hello_retry";
    /// The alert that ended the handshake (`unknown_ca`).
    pub const ERROR_TYPE: &str = "error.type";
    /// Which side sent it: `client` or `server`.
    pub const ALERT_BY: &str = "wasmtap.tls.alert_by";
    /// Every key.
    pub const ALL: [&str; 16] = [
        SERVER,
        SERVER_NAME,
        JA4,
        JA3,
        JA3S,
        ALPN_OFFERED,
        PROTOCOL,
        VERSION,
        CIPHER,
        NEXT_PROTOCOL,
        RESUMED,
        ESTABLISHED,
        CLIENT_CERT,
        RETRY,
        ERROR_TYPE,
        ALERT_BY,
    ];
}

/// Largest handshake message kept (certificate chains are skipped past it).
pub const MAX_HANDSHAKE: usize = 64 << 10;

const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

/// Per-flow state.
#[derive(Debug, Default)]
pub struct TlsHandler {
    /// Handshake bytes per direction awaiting a whole message.
    buf: [Vec<u8>; 2],
    /// Cleartext ended in this direction (ChangeCipherSpec, or 1.3).
    encrypted: [bool; 2],
    client: Option<ClientHello>,
    server: Option<ServerHello>,
    retry: bool,
    cert_requested: bool,
    cert_sent: bool,
    requested: bool,
    answered: bool,
    hello_start: u64,
}

/// The session type.
pub type TlsSession = Framed<TlsHandler>;

impl Decoder for Tls {
    type Session = TlsSession;

    fn describe() -> Descriptor {
        Descriptor::new("tls", env!("CARGO_PKG_VERSION"))
            .protocol("tls")
            .transport(Transport::Tcp)
            .port(443)
            .port(8443)
            .attribute_keys(&keys::ALL)
    }

    fn probe(transport: Transport, _dir: Direction, data: &[u8]) -> u8 {
        if transport != Transport::Tcp {
            return 0;
        }
        probe(data)
    }

    fn new_session(_transport: Transport, _server_port: u16) -> TlsSession {
        Framed::new(TlsHandler::default())
    }
}

/// Confidence that `data`, a flow's first bytes, opens a TLS handshake.
pub fn probe(data: &[u8]) -> u8 {
    match data {
        [HANDSHAKE, 3, minor, _, _, kind, ..] if *minor <= 4 => match kind {
            1 => 95,
            2 => 90,
            _ => 0,
        },
        _ => 0,
    }
}

impl TlsHandler {
    fn request(&mut self, f: &Frame<'_>, out: &mut Vec<Message>) {
        let Some(c) = &self.client else { return };
        if self.requested {
            return;
        }
        self.requested = true;
        self.hello_start = f.start_ns;
        let mut m = Message::request(f.start_ns, f.end_ns, f.len, "handshake")
            .attribute(Attribute::str(keys::JA4, hello::ja4(c)))
            .attribute(Attribute::str(keys::JA3, hello::ja3(c)));
        if let Some(sni) = &c.sni {
            m = m
                .attribute(Attribute::str(keys::SERVER, sni.clone()))
                .attribute(Attribute::str(keys::SERVER_NAME, sni.clone()));
        }
        if !c.alpn.is_empty() {
            m = m.attribute(Attribute::str(keys::ALPN_OFFERED, c.alpn.join(",")));
        }
        out.push(m);
    }

    /// The handshake's outcome: `alert` = (description, by) when it failed.
    fn respond(&mut self, f: &Frame<'_>, alert: Option<(String, &str)>, out: &mut Vec<Message>) {
        if !self.requested || self.answered {
            return;
        }
        self.answered = true;
        let mut m = Message::response(f.start_ns, f.end_ns, f.len)
            .attribute(Attribute::str(keys::PROTOCOL, "tls"));
        if let Some(s) = &self.server {
            let resumed = !s.session_id.is_empty()
                && self
                    .client
                    .as_ref()
                    .is_some_and(|c| c.session_id == s.session_id);
            m = m
                .attribute(Attribute::str(
                    keys::VERSION,
                    hello::version_name(s.version),
                ))
                .attribute(Attribute::str(keys::CIPHER, hello::cipher_name(s.cipher)))
                .attribute(Attribute::boolean(keys::RESUMED, resumed))
                .attribute(Attribute::str(keys::JA3S, hello::ja3s(s)));
            if let Some(a) = &s.alpn {
                m = m.attribute(Attribute::str(keys::NEXT_PROTOCOL, a.clone()));
            }
        }
        if self.cert_requested || self.cert_sent {
            let v = if self.cert_sent { "sent" } else { "requested" };
            m = m.attribute(Attribute::str(keys::CLIENT_CERT, v));
        }
        if self.retry {
            m = m.attribute(Attribute::boolean(keys::RETRY, true));
        }
        m = match alert {
            Some((name, by)) => m
                .attribute(Attribute::boolean(keys::ESTABLISHED, false))
                .attribute(Attribute::str(keys::ERROR_TYPE, name.clone()))
                .attribute(Attribute::str(keys::ALERT_BY, by))
                .error(&name),
            None => m
                .attribute(Attribute::boolean(keys::ESTABLISHED, true))
                .ok(""),
        };
        out.push(m);
    }

    fn handshake(&mut self, dir: Direction, f: &Frame<'_>, out: &mut Vec<Message>) {
        let d = dir.index();
        loop {
            let b = &self.buf[d];
            let Some(h) = b.get(..4) else { return };
            let len = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
            if len > MAX_HANDSHAKE {
                // A message this long (a certificate chain) is not needed:
                // drop what is buffered; later records resynchronise on
                // their own message headers only if they start one.
                self.buf[d].clear();
                return;
            }
            let Some(body) = b.get(4..4 + len) else {
                return;
            };
            let kind = h[0];
            let body = body.to_vec();
            self.buf[d].drain(..4 + len);
            match (dir, kind) {
                (Direction::ToServer, 1) if self.client.is_none() => {
                    if let Ok(c) = hello::client_hello(&body) {
                        self.client = Some(c);
                        self.request(f, out);
                    }
                }
                (Direction::ToClient, 2) => {
                    if let Ok(s) = hello::server_hello(&body) {
                        if s.retry {
                            self.retry = true;
                        } else {
                            if s.version == 0x0304 {
                                // Everything after the ServerHello is encrypted.
                                self.encrypted = [true, true];
                                self.buf = [Vec::new(), Vec::new()];
                            }
                            self.server = Some(s);
                        }
                    }
                }
                (Direction::ToClient, 13) => self.cert_requested = true,
                (Direction::ToServer, 11) => {
                    // An empty list (3 zero bytes) sends no certificate.
                    self.cert_sent |= body.len() > 3;
                }
                _ => {}
            }
            if self.encrypted[d] {
                return;
            }
        }
    }
}

impl FrameHandler for TlsHandler {
    const RESYNC: bool = true;

    fn framing(&self, _dir: Direction) -> Framing {
        Framing::Length(LengthField::new(3, 2, true))
    }

    fn max_frame(&self) -> u64 {
        (1 << 14) + 2048 + 5
    }

    fn plausible(&self, _dir: Direction, head: &[u8], len: u64) -> bool {
        match head {
            [t, v, m, ..] => (20..=24).contains(t) && *v == 3 && *m <= 4 && len > 5,
            [t] | [t, _] => (20..=24).contains(t),
            [] => true,
        }
    }

    fn frame(
        &mut self,
        dir: Direction,
        f: Frame<'_>,
        out: &mut Vec<Message>,
    ) -> Result<(), DecodeError> {
        let d = dir.index();
        let Some(&kind) = f.head.first() else {
            return Ok(());
        };
        let payload = f.head.get(5..).unwrap_or_default();
        match kind {
            HANDSHAKE if !self.encrypted[d] => {
                if self.buf[d].len() + payload.len() <= MAX_HANDSHAKE + 4 {
                    self.buf[d].extend_from_slice(payload);
                } else {
                    self.buf[d].clear();
                }
                self.handshake(dir, &f, out);
            }
            CHANGE_CIPHER_SPEC => {
                // Before a ServerHello, or in TLS 1.3, a ChangeCipherSpec is
                // the middlebox-compatibility one: nothing changes.
                let tls12 = self.server.as_ref().is_some_and(|s| s.version != 0x0304);
                if tls12 {
                    self.encrypted[d] = true;
                    if dir == Direction::ToClient && self.server.is_some() {
                        // TLS 1.2: the server's ChangeCipherSpec ends its part.
                        self.respond(&f, None, out);
                    }
                }
            }
            // A cleartext alert is two bytes (encrypted ones are longer, or
            // typed as application data in 1.3).
            ALERT if f.len == 7 => {
                if let [level, desc, ..] = payload
                    && (*level == 2 || *desc != 0)
                {
                    let by = if dir == Direction::ToServer {
                        "client"
                    } else {
                        "server"
                    };
                    self.respond(&f, Some((hello::alert_name(*desc), by)), out);
                }
            }
            APPLICATION_DATA if dir == Direction::ToServer => {
                let tls13 = self.server.as_ref().is_some_and(|s| s.version == 0x0304);
                if tls13 && !self.answered {
                    // The client's first encrypted record: its Finished, or
                    // an alert (2 bytes + content type + 16-byte tag).
                    if f.len == 5 + 19 {
                        self.respond(&f, Some(("encrypted_alert".to_string(), "client")), out);
                    } else {
                        self.respond(&f, None, out);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, _reason: CloseReason, _ts: u64, _out: &mut Vec<Message>) {
        // A handshake left unfinished is the host's to judge (unanswered,
        // or cut by the capture).
    }
}

wasmtap_sdk::export_decoder!(Tls);
