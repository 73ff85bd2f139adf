//! wasmtap-capture: the only crate that touches libpcap.
//!
//! Reads frames with their capture timestamps from pcap/pcapng files
//! ([`FileSource`]) and live interfaces ([`LiveSource`]). Nothing here parses
//! packets beyond what libpcap does; [`Frame`]s go to `wasmtap-decode`.

use std::path::Path;

/// Errors opening or reading a capture; each names the source.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened or is not a pcap/pcapng capture.
    #[error("{path}: cannot read as a pcap/pcapng capture: {reason}")]
    Open {
        /// The file.
        path: String,
        /// libpcap's reason.
        reason: String,
    },
    /// A live interface could not be opened, configured or read.
    #[error("interface {interface}: {reason}")]
    Live {
        /// The interface.
        interface: String,
        /// libpcap's reason.
        reason: String,
    },
    /// The file broke off or is corrupt after some packets.
    #[error("{path}: capture unreadable after {packets} packets: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Packets read before the error.
        packets: u64,
        /// libpcap's reason.
        reason: String,
    },
}

mod repair {
    //! Some writers put the classic pcap header's version fields in the other
    //! byte order than its magic number (seen in DeepFlow's test captures).
    //! Wireshark reads such files; libpcap refuses them. We feed libpcap the
    //! file through a pipe with the version fields corrected.

    use std::io::{Read, Write};
    use std::path::Path;

    /// `None`: not that defect. `Some(result)`: the repaired capture, or why it failed.
    pub(super) fn open_swapped_version(
        path: &Path,
    ) -> Option<Result<pcap::Capture<pcap::Offline>, String>> {
        let mut f = std::fs::File::open(path).ok()?;
        let mut hdr = [0u8; 24];
        f.read_exact(&mut hdr).ok()?;
        let le = match hdr[..4] {
            [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
            [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
            _ => return None,
        };
        // Version 2.4 written in the opposite byte order of the magic.
        let swapped = if le { [0, 2, 0, 4] } else { [2, 0, 4, 0] };
        if hdr[4..8] != swapped {
            return None;
        }
        hdr[4..8].copy_from_slice(if le { &[2, 0, 4, 0] } else { &[0, 2, 0, 4] });
        let (reader, mut writer) = match std::io::pipe() {
            Ok(p) => p,
            Err(e) => return Some(Err(e.to_string())),
        };
        // The pump ends when the file is copied or libpcap closes the pipe.
        let spawned = std::thread::Builder::new()
            .name("pcap-repair".into())
            .spawn(move || {
                if writer.write_all(&hdr).is_ok() {
                    let _ = std::io::copy(&mut f, &mut writer);
                }
            });
        if let Err(e) = spawned {
            return Some(Err(e.to_string()));
        }
        let fd = std::os::fd::IntoRawFd::into_raw_fd(reader);
        // SAFETY: `fd` is a freshly created pipe read end that we own and hand
        // over; libpcap takes ownership (fdopen) and closes it with the capture.
        #[allow(unsafe_code)]
        let cap = unsafe { pcap::Capture::from_raw_fd_with_precision(fd, pcap::Precision::Nano) };
        Some(cap.map_err(|e| e.to_string()))
    }
}

/// One captured frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length on the wire as recorded (may exceed `data.len()`, and is not always right).
    pub wire_len: u32,
    /// The captured bytes.
    pub data: &'a [u8],
}

/// Copies `file` into `pipe` as it grows, until `complete` is set and the
/// file is read to its end (or the reader closed the pipe).
fn tail(
    mut file: std::fs::File,
    mut pipe: std::io::PipeWriter,
    complete: &std::sync::atomic::AtomicBool,
    poll: std::time::Duration,
) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Read before looking at the flag: once it is seen set, one more
        // read to the end is all that is left.
        let last = complete.load(std::sync::atomic::Ordering::Acquire);
        match file.read(&mut buf) {
            Ok(0) if last => return,
            Ok(0) => std::thread::sleep(poll),
            Ok(n) => {
                if pipe.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A pcap or pcapng file read frame by frame.
pub struct FileSource {
    cap: pcap::Capture<pcap::Offline>,
    path: String,
    packets: u64,
    link: i32,
}

impl FileSource {
    /// Opens a capture file (pcap or pcapng, any link type libpcap knows).
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let p = path.display().to_string();
        let cap = match pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano) {
            Ok(c) => c,
            Err(e) => match repair::open_swapped_version(path) {
                Some(Ok(c)) => {
                    tracing::warn!(
                        "{p}: pcap header has byte-swapped version fields; read as pcap 2.4"
                    );
                    c
                }
                Some(Err(e2)) => {
                    return Err(CaptureError::Open {
                        path: p,
                        reason: format!("{e}; repair: {e2}"),
                    });
                }
                None => {
                    return Err(CaptureError::Open {
                        path: p,
                        reason: e.to_string(),
                    });
                }
            },
        };
        let link = cap.get_datalink().0;
        Ok(Self {
            cap,
            path: p,
            packets: 0,
            link,
        })
    }

    /// Opens a capture file that a capture tool may still be writing: frames
    /// are read as the file grows (a read waits for the rest of a frame
    /// written in part), until `complete` is set and what the file then
    /// holds has been read; then the source ends like a finished file. The
    /// file is polled every `poll` while nothing new is in it.
    pub fn open_growing(
        path: &Path,
        complete: std::sync::Arc<std::sync::atomic::AtomicBool>,
        poll: std::time::Duration,
    ) -> Result<Self, CaptureError> {
        let p = path.display().to_string();
        let err = |reason: String| CaptureError::Open {
            path: p.clone(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        let (reader, writer) = std::io::pipe().map_err(|e| err(e.to_string()))?;
        std::thread::Builder::new()
            .name("pcap-follow".into())
            .spawn(move || tail(file, writer, &complete, poll))
            .map_err(|e| err(e.to_string()))?;
        let fd = std::os::fd::IntoRawFd::into_raw_fd(reader);
        // SAFETY: `fd` is a freshly created pipe read end that we own and hand
        // over; libpcap takes ownership (fdopen) and closes it with the capture.
        #[allow(unsafe_code)]
        let cap = unsafe { pcap::Capture::from_raw_fd_with_precision(fd, pcap::Precision::Nano) }
            .map_err(|e| err(e.to_string()))?;
        let link = cap.get_datalink().0;
        Ok(Self {
            cap,
            path: p,
            packets: 0,
            link,
        })
    }

    /// The file's link type (DLT number).
    pub fn datalink(&self) -> i32 {
        self.link
    }

    /// Frames read so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// The next frame; `Ok(None)` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        match self.cap.next_packet() {
            Ok(pkt) => {
                self.packets += 1;
                let ts = pkt.header.ts;
                // Opened with nanosecond precision: tv_usec carries nanoseconds.
                let ts_ns = (ts.tv_sec.max(0) as u64)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(ts.tv_usec.max(0) as u64);
                Ok(Some(Frame {
                    ts_ns,
                    wire_len: pkt.header.len,
                    data: pkt.data,
                }))
            }
            Err(pcap::Error::NoMorePackets) => Ok(None),
            Err(e) => Err(CaptureError::Read {
                path: self.path.clone(),
                packets: self.packets,
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_capture_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("wasmtap-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("junk.pcap");
        std::fs::write(&f, b"this is not a capture file at all").unwrap();
        let err = FileSource::open(&f).err().expect("must fail");
        assert!(err.to_string().contains("junk.pcap"), "{err}");
        let missing = FileSource::open(&dir.join("missing.pcap"))
            .err()
            .expect("must fail");
        assert!(missing.to_string().contains("missing.pcap"));
    }
}

/// Without immediate mode, the longest the kernel holds a packet back (the
/// read timeout, after which a partly filled block is handed over), in ms.
pub const BLOCK_TIMEOUT_MS: i32 = 100;

/// Settings of a live capture.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Bytes kept of each frame.
    pub snaplen: i32,
    /// Kernel buffer, bytes (immediate mode needs a large one: 2 MiB dropped packets on `lo`).
    pub buffer_bytes: i32,
    /// Deliver packets as they arrive rather than in kernel batches. Off,
    /// the kernel hands over a block when it fills or after 100 ms: far fewer
    /// wake-ups (less CPU), at the price of up to 100 ms more latency.
    pub immediate: bool,
    /// Promiscuous mode (see traffic not addressed to this host: mirrored ports).
    pub promisc: bool,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            snaplen: 262_144,
            buffer_bytes: 32 << 20,
            immediate: true,
            promisc: false,
        }
    }
}

/// Kernel and libpcap counters of a live capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Packets received by the filter (on `lo`, libpcap counts each packet twice).
    pub received: u64,
    /// Packets dropped because the buffer was full.
    pub dropped: u64,
    /// Packets dropped by the interface or driver.
    pub if_dropped: u64,
}

/// A capturable interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name (`eth0`, `lo`, `any`).
    pub name: String,
    /// A loopback interface.
    pub loopback: bool,
    /// Up and running.
    pub up: bool,
    /// Has at least one address.
    pub has_address: bool,
}

/// The capturable interfaces (libpcap's list, with "any" on Linux).
pub fn interfaces() -> Result<Vec<Interface>, CaptureError> {
    pcap::Device::list()
        .map(|v| {
            v.into_iter()
                .map(|d| Interface {
                    loopback: d.flags.is_loopback(),
                    up: d.flags.is_up() && d.flags.is_running(),
                    has_address: !d.addresses.is_empty(),
                    name: d.name,
                })
                .collect()
        })
        .map_err(|e| CaptureError::Live {
            interface: "*".into(),
            reason: e.to_string(),
        })
}

/// A live interface, read without blocking (in immediate mode a blocking read
/// may never return when traffic stops).
pub struct LiveSource {
    cap: pcap::Capture<pcap::Active>,
    name: String,
    link: i32,
    nano: bool,
}

impl LiveSource {
    /// Opens `name` (an interface, or "any") with an optional BPF filter.
    pub fn open(name: &str, cfg: &LiveConfig, bpf: Option<&str>) -> Result<Self, CaptureError> {
        let err = |e: pcap::Error| CaptureError::Live {
            interface: name.to_string(),
            reason: e.to_string(),
        };
        let inactive = || {
            pcap::Capture::from_device(name).map(|c| {
                c.snaplen(cfg.snaplen)
                    .buffer_size(cfg.buffer_bytes)
                    .immediate_mode(cfg.immediate)
                    .promisc(cfg.promisc)
                    .timeout(BLOCK_TIMEOUT_MS)
            })
        };
        // Nanosecond timestamps where the platform offers them.
        let (cap, nano) = match inactive()
            .map_err(err)?
            .precision(pcap::Precision::Nano)
            .open()
        {
            Ok(c) => (c, true),
            Err(_) => (inactive().map_err(err)?.open().map_err(err)?, false),
        };
        let cap = cap.setnonblock().map_err(err)?;
        let link = cap.get_datalink().0;
        let mut s = Self {
            cap,
            name: name.to_string(),
            link,
            nano,
        };
        if bpf.is_some() {
            s.set_filter(bpf)?;
        }
        Ok(s)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The link type (DLT number).
    pub fn datalink(&self) -> i32 {
        self.link
    }

    /// Replaces the BPF filter (`None`: capture everything).
    pub fn set_filter(&mut self, bpf: Option<&str>) -> Result<(), CaptureError> {
        let expr = bpf.unwrap_or("");
        let res = match self.cap.filter(expr, true) {
            // libpcap's optimizer refuses a program that can match nothing
            // (e.g. excluding the only port captured); that is still what the
            // operator asked for, so compile it unoptimized.
            Err(e) if e.to_string().contains("rejects all packets") => self.cap.filter(expr, false),
            other => other,
        };
        res.map_err(|e| CaptureError::Live {
            interface: self.name.clone(),
            reason: format!("filter: {e}"),
        })
    }

    /// The next frame, or `Ok(None)` when none is waiting.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        match self.cap.next_packet() {
            Ok(pkt) => {
                let ts = pkt.header.ts;
                let frac = ts.tv_usec.max(0) as u64;
                let frac = if self.nano { frac } else { frac * 1000 };
                let ts_ns = (ts.tv_sec.max(0) as u64)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(frac);
                Ok(Some(Frame {
                    ts_ns,
                    wire_len: pkt.header.len,
                    data: pkt.data,
                }))
            }
            Err(pcap::Error::TimeoutExpired) | Err(pcap::Error::NoMorePackets) => Ok(None),
            Err(e) => Err(CaptureError::Live {
                interface: self.name.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// Waits until at least one of `sources` may have a frame to read, or
    /// `timeout` passes (a signal also ends the wait early). In immediate mode
    /// the kernel wakes the caller per packet; otherwise when a buffer block
    /// fills or its timeout (100 ms) expires, so an idle or moderately loaded
    /// agent sleeps instead of spinning.
    pub fn wait_any(sources: &[&LiveSource], timeout: std::time::Duration) {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds: Vec<PollFd<'_>> = sources
            .iter()
            .map(|s| PollFd::new(&s.cap, PollFlags::IN))
            .collect();
        let ts = Timespec {
            tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: timeout.subsec_nanos().into(),
        };
        // An error (EINTR on a signal) is the same as a timeout to the caller:
        // it reads, finds nothing or something, and decides again.
        let _ = poll(&mut fds, Some(&ts));
    }

    /// Kernel counters (received, dropped).
    pub fn stats(&mut self) -> Result<LiveStats, CaptureError> {
        self.cap
            .stats()
            .map(|s| LiveStats {
                received: u64::from(s.received),
                dropped: u64::from(s.dropped),
                if_dropped: u64::from(s.if_dropped),
            })
            .map_err(|e| CaptureError::Live {
                interface: self.name.clone(),
                reason: e.to_string(),
            })
    }
}
