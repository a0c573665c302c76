//! Stage 3: ring-buffer bytes to typed records. A malformed sample is an error value the reader
//! counts and skips, never a panic.

use crate::event::{Backend, Kind};
use profiler_common::{
    flags, kind, mount_flags, CowEvent, MountEvent, SyscallEnd, COMM_LEN, PATH_BUF, RECORD_COW,
    RECORD_MOUNT, RECORD_SYSCALL_END,
};

/// The kernel's kind id; `TP_REGULAR_COPY_UP` is decided later from the mount's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireKind {
    Known(Kind),
    TpRegular,
}

impl TryFrom<u32> for WireKind {
    type Error = DecodeError;
    fn try_from(v: u32) -> Result<Self, DecodeError> {
        Ok(Self::Known(match v {
            kind::DATA_COPY_UP => Kind::DataCopyUp,
            kind::METACOPY => Kind::Metacopy,
            kind::DIR_COPY_UP => Kind::DirCopyUp,
            kind::WHITEOUT => Kind::Whiteout,
            kind::OPAQUE_DIR => Kind::OpaqueDir,
            kind::CREATE_OVER_WHITEOUT => Kind::CreateOverWhiteout,
            kind::SPECIAL_COPY_UP => Kind::SpecialCopyUp,
            kind::DEFERRED_DATA_COPY_UP => Kind::DeferredDataCopyUp,
            kind::TP_REGULAR_COPY_UP => return Ok(Self::TpRegular),
            other => return Err(DecodeError::UnknownKind { kind: other }),
        }))
    }
}

fn wire_backend(id: u32) -> Result<Backend, DecodeError> {
    Backend::from_wire(id).ok_or(DecodeError::UnknownBackend { backend: id })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("sample of {len} bytes is too short for its record type")]
    Short { len: usize },
    #[error("unknown record tag {tag}")]
    UnknownRecord { tag: u32 },
    #[error("unknown event kind {kind}")]
    UnknownKind { kind: u32 },
    #[error("unknown backend id {backend}")]
    UnknownBackend { backend: u32 },
    #[error("path length {len} exceeds the buffer")]
    BadPath { len: u32 },
}

/// A decoded copy-up or whiteout, before enrichment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent flag bits of the wire event, decoded one by one"
)]
pub struct RawEvent {
    pub kind: WireKind,
    pub backend: Backend,
    pub end_ns: u64,
    pub latency_ns: u64,
    pub latency_partial: bool,
    pub syscall_enter_ns: Option<u64>,
    pub syscall_nr: Option<i32>,
    /// The syscall's exit time and return value, when the event was emitted at its exit
    /// (tracepoint backend); else they come later in a [`Record::SyscallEnd`].
    pub syscall_exit: Option<SyscallExit>,
    pub size_bytes: u64,
    pub bytes_copied: u64,
    pub cgroup_id: u64,
    pub root_ino: u64,
    pub mount_id: Option<u32>,
    pub dev_is_upper: bool,
    pub pid: u32,
    pub tid: u32,
    pub mnt_ns: u32,
    pub kdev: u32,
    pub result: i32,
    pub lower_idx: Option<u32>,
    pub mode: u32,
    pub comm: String,
    /// Relative to the overlay root (kprobe) or the upper root (tracepoint).
    pub path: String,
    pub path_truncated: bool,
    /// kprobe backend without overlay's types (`flags::NO_OVL_TYPES`).
    pub no_ovl_types: bool,
    pub phases: profiler_common::Phases,
}

/// The exit of the syscall an event happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallExit {
    pub exit_ns: u64,
    pub ret: i64,
}

/// An overlay mount the kernel side registered (see `MountEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRecord {
    pub serial: u32,
    pub ovl_dev: u32,
    pub upper_dev: u32,
    pub upper_root_ino: u64,
    pub work_ino: u64,
    pub pid: u32,
    /// `mount(2)`'s target and data, as the caller gave them; `None` for the new mount API.
    pub args: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a record lives on the stack between decode and the enricher; boxing each event \
              cost a large allocation and free per event"
)]
pub enum Record {
    Cow(RawEvent),
    SyscallEnd(SyscallEnd),
    Mount(Box<MountRecord>),
}

fn read_pod<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short { len: bytes.len() });
    }
    // SAFETY: length checked; T is a repr(C) integer-only wire type (every bit pattern valid);
    // read_unaligned copes with any alignment of the ring-buffer sample.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// A copy-up or whiteout record without its path buffer, which stays zeroed: `decode` reads the
/// path from the sample in place (at [`PATH_AT`]). The buffer is most of the record (512 of its 728
/// bytes), and past the path's own bytes the kernel never writes it: copying it whole read up
/// to eight cache lines per event that nothing uses.
fn read_cow(bytes: &[u8]) -> Result<CowEvent, DecodeError> {
    if bytes.len() < size_of::<CowEvent>() {
        return Err(DecodeError::Short { len: bytes.len() });
    }
    let mut ev = std::mem::MaybeUninit::<CowEvent>::zeroed();
    // SAFETY: length checked; the first `PATH_AT` bytes of the sample go over the same bytes
    // of a zeroed CowEvent (integers only: every bit pattern valid).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), ev.as_mut_ptr().cast::<u8>(), PATH_AT);
        Ok(ev.assume_init())
    }
}

/// Where [`CowEvent::path`] starts in a sample: the record's last field.
const PATH_AT: usize = std::mem::offset_of!(CowEvent, path);
const _: () = assert!(PATH_AT + PATH_BUF == size_of::<CowEvent>());

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Leaf-first, NUL-separated components to a `/`-joined relative path.
pub fn join_path(buf: &[u8], len: usize) -> String {
    let mut path = String::with_capacity(len);
    for part in buf[..len].rsplit(|&b| b == 0).filter(|p| !p.is_empty()) {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(&String::from_utf8_lossy(part));
    }
    path
}

pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let tag: u32 = read_pod(bytes)?;
    match tag {
        RECORD_SYSCALL_END => Ok(Record::SyscallEnd(read_pod(bytes)?)),
        RECORD_MOUNT => {
            let m: MountEvent = read_pod(bytes)?;
            Ok(Record::Mount(Box::new(MountRecord {
                serial: m.serial,
                ovl_dev: m.ovl_dev,
                upper_dev: m.upper_dev,
                upper_root_ino: m.upper_root_ino,
                work_ino: m.work_ino,
                pid: m.pid,
                args: (m.flags & mount_flags::ARGS != 0).then(|| (cstr(&m.target), cstr(&m.data))),
            })))
        }
        RECORD_COW => {
            let ev = read_cow(bytes)?;
            let len = ev.path_len as usize;
            if len > PATH_BUF {
                return Err(DecodeError::BadPath { len: ev.path_len });
            }
            let in_syscall = ev.flags & flags::IN_SYSCALL != 0;
            Ok(Record::Cow(RawEvent {
                kind: WireKind::try_from(ev.kind)?,
                backend: wire_backend(ev.backend)?,
                end_ns: ev.end_ns,
                latency_ns: ev.latency_ns,
                latency_partial: ev.flags & flags::LATENCY_PARTIAL != 0,
                syscall_enter_ns: in_syscall.then_some(ev.syscall_enter_ns),
                syscall_nr: in_syscall.then_some(ev.syscall_nr),
                syscall_exit: (in_syscall && ev.flags & flags::SYSCALL_EXITED != 0).then_some(
                    SyscallExit {
                        exit_ns: ev.end_ns,
                        ret: ev.syscall_ret,
                    },
                ),
                size_bytes: ev.size_bytes,
                bytes_copied: ev.bytes_copied,
                cgroup_id: ev.cgroup_id,
                root_ino: ev.root_ino,
                mount_id: (ev.mount_id != 0).then_some(ev.mount_id),
                dev_is_upper: ev.flags & flags::DEV_IS_UPPER != 0,
                pid: ev.pid,
                tid: ev.tid,
                mnt_ns: ev.mnt_ns,
                kdev: ev.dev,
                result: ev.result,
                lower_idx: (ev.lower_idx != 0).then_some(ev.lower_idx),
                mode: ev.mode,
                comm: cstr(&ev.comm[..COMM_LEN]),
                // `read_cow` checked that the sample holds the whole buffer.
                path: join_path(&bytes[PATH_AT..PATH_AT + PATH_BUF], len),
                path_truncated: ev.flags & flags::PATH_TRUNCATED != 0,
                no_ovl_types: ev.flags & flags::NO_OVL_TYPES != 0,
                phases: ev.phases,
            }))
        }
        other => Err(DecodeError::UnknownRecord { tag: other }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_bytes(f: impl FnOnce(&mut CowEvent)) -> Vec<u8> {
        // SAFETY: CowEvent is integers only; all-zero is valid.
        let mut ev: CowEvent = unsafe { std::mem::zeroed() };
        ev.record = RECORD_COW;
        ev.kind = kind::DATA_COPY_UP;
        ev.backend = profiler_common::backend::KPROBE;
        f(&mut ev);
        // SAFETY: plain bytes of a repr(C) value without padding.
        unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<CowEvent>()) }
            .to_vec()
    }

    #[test]
    fn decodes_a_copy_up_with_its_path_leaf_first() {
        let bytes = event_bytes(|ev| {
            let comps = b"f\0d\0";
            ev.path[..comps.len()].copy_from_slice(comps);
            ev.path_len = comps.len() as u32;
            ev.depth = 2;
            ev.comm[..4].copy_from_slice(b"bash");
            ev.latency_ns = 1234;
            ev.lower_idx = 2;
            ev.flags = flags::IN_SYSCALL;
            ev.syscall_nr = 257;
            ev.syscall_enter_ns = 99;
        });
        let Record::Cow(ev) = decode(&bytes).unwrap() else {
            panic!("not a cow event")
        };
        assert_eq!(ev.path, "d/f");
        assert_eq!(ev.comm, "bash");
        assert_eq!(ev.kind, WireKind::Known(Kind::DataCopyUp));
        assert_eq!(ev.lower_idx, Some(2));
        assert_eq!(ev.syscall_nr, Some(257));
        assert_eq!(ev.syscall_enter_ns, Some(99));
        assert_eq!(ev.syscall_exit, None);
        assert_eq!(ev.latency_ns, 1234);
    }

    #[test]
    fn an_event_emitted_at_syscall_exit_carries_the_exit() {
        let bytes = event_bytes(|ev| {
            ev.flags = flags::IN_SYSCALL | flags::SYSCALL_EXITED;
            ev.syscall_nr = 257;
            ev.syscall_enter_ns = 100;
            ev.end_ns = 350;
            ev.syscall_ret = 3;
        });
        let Record::Cow(ev) = decode(&bytes).unwrap() else {
            panic!("not a cow event")
        };
        assert_eq!(
            ev.syscall_exit,
            Some(SyscallExit {
                exit_ns: 350,
                ret: 3
            })
        );
    }

    #[test]
    fn outside_a_syscall_has_no_syscall() {
        let Record::Cow(ev) = decode(&event_bytes(|_| {})).unwrap() else {
            panic!()
        };
        assert_eq!(ev.syscall_nr, None);
        assert_eq!(ev.lower_idx, None);
        assert_eq!(ev.path, "");
    }

    #[test]
    fn malformed_samples_are_errors_not_panics() {
        assert_eq!(decode(&[1, 0]), Err(DecodeError::Short { len: 2 }));
        assert_eq!(
            decode(&[9, 0, 0, 0]),
            Err(DecodeError::UnknownRecord { tag: 9 })
        );
        let short = &event_bytes(|_| {})[..100];
        assert_eq!(decode(short), Err(DecodeError::Short { len: 100 }));
        assert_eq!(
            decode(&event_bytes(|e| e.kind = 77)),
            Err(DecodeError::UnknownKind { kind: 77 })
        );
        assert_eq!(
            decode(&event_bytes(|e| e.backend = 9)),
            Err(DecodeError::UnknownBackend { backend: 9 })
        );
        assert_eq!(
            decode(&event_bytes(|e| e.path_len = 4096)),
            Err(DecodeError::BadPath { len: 4096 })
        );
    }

    #[test]
    fn syscall_end_round_trips() {
        let end = SyscallEnd {
            record: RECORD_SYSCALL_END,
            tid: 7,
            syscall_nr: 87,
            _pad: 0,
            ret: -2,
            enter_ns: 5,
            exit_ns: 9,
        };
        // SAFETY: plain bytes of a repr(C) value without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const end).cast::<u8>(), size_of::<SyscallEnd>())
        };
        let Record::SyscallEnd(got) = decode(bytes).unwrap() else {
            panic!()
        };
        assert_eq!(
            (got.tid, got.syscall_nr, got.ret, got.enter_ns, got.exit_ns),
            (7, 87, -2, 5, 9)
        );
    }

    #[test]
    fn join_path_handles_empty_and_truncated_buffers() {
        assert_eq!(join_path(b"c\0b\0a\0", 6), "a/b/c");
        assert_eq!(join_path(b"", 0), "");
        assert_eq!(join_path(b"x\0", 2), "x");
        assert_eq!(join_path(b"\0c\0\0b\0", 6), "b/c");
        assert_eq!(join_path(b"c\0b\0a\0zz", 6), "a/b/c");
    }
}
