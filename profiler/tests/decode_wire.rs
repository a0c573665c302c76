//! The decoder against the wire format, field by field, with every expectation written out by
//! hand from `profiler-common` (kind and backend ids, flag bits, buffer sizes): a decoder that
//! maps one id to the wrong kind, drops a flag or moves a bound fails here without a kernel.

use cowprof::{
    event::Kind,
    pipeline::decode::{decode, DecodeError, Record, SyscallExit, WireKind},
};
use profiler_common::{
    backend, flags, CowEvent, SyscallEnd, PATH_BUF, RECORD_COW, RECORD_SYSCALL_END,
};

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: plain bytes of a repr(C) integer-only value without padding (sizes pinned in
    // profiler-common).
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

fn event(f: impl FnOnce(&mut CowEvent)) -> Vec<u8> {
    // SAFETY: CowEvent is integers only; all-zero is valid.
    let mut ev: CowEvent = unsafe { std::mem::zeroed() };
    ev.record = RECORD_COW;
    ev.kind = 1;
    ev.backend = backend::KPROBE;
    f(&mut ev);
    bytes_of(&ev)
}

fn cow(bytes: &[u8]) -> cowprof::pipeline::decode::RawEvent {
    match decode(bytes) {
        Ok(Record::Cow(ev)) => ev,
        other => panic!("not a cow event: {other:?}"),
    }
}

#[test]
fn every_kind_id_maps_to_its_kind() {
    let want = [
        (1, WireKind::Known(Kind::DataCopyUp)),
        (2, WireKind::Known(Kind::Metacopy)),
        (3, WireKind::Known(Kind::DirCopyUp)),
        (4, WireKind::Known(Kind::Whiteout)),
        (5, WireKind::Known(Kind::OpaqueDir)),
        (6, WireKind::Known(Kind::CreateOverWhiteout)),
        (7, WireKind::Known(Kind::SpecialCopyUp)),
        (8, WireKind::Known(Kind::DeferredDataCopyUp)),
        (9, WireKind::TpRegular),
    ];
    for (id, kind) in want {
        assert_eq!(cow(&event(|e| e.kind = id)).kind, kind, "kind id {id}");
    }
    for id in [0, 10, u32::MAX] {
        assert!(
            matches!(
                decode(&event(|e| e.kind = id)),
                Err(DecodeError::UnknownKind { kind }) if kind == id
            ),
            "kind id {id}"
        );
    }
}

#[test]
fn every_backend_id_maps_to_its_name() {
    for (id, name) in [(1, "fentry"), (2, "kprobe"), (3, "tracepoint")] {
        assert_eq!(cow(&event(|e| e.backend = id)).backend.as_str(), name);
    }
    for id in [0, 4] {
        assert!(matches!(
            decode(&event(|e| e.backend = id)),
            Err(DecodeError::UnknownBackend { backend }) if backend == id
        ));
    }
}

#[test]
fn each_flag_reaches_its_field_and_no_other() {
    let none = cow(&event(|_| {}));
    assert_eq!(
        (
            none.path_truncated,
            none.latency_partial,
            none.dev_is_upper,
            none.syscall_nr,
            none.syscall_enter_ns
        ),
        (false, false, false, None, None)
    );
    let t = cow(&event(|e| e.flags = flags::PATH_TRUNCATED));
    assert_eq!(
        (t.path_truncated, t.latency_partial, t.dev_is_upper),
        (true, false, false)
    );
    let p = cow(&event(|e| e.flags = flags::LATENCY_PARTIAL));
    assert_eq!(
        (p.path_truncated, p.latency_partial, p.dev_is_upper),
        (false, true, false)
    );
    let u = cow(&event(|e| e.flags = flags::DEV_IS_UPPER));
    assert_eq!(
        (u.path_truncated, u.latency_partial, u.dev_is_upper),
        (false, false, true)
    );
    let s = cow(&event(|e| {
        e.flags = flags::IN_SYSCALL;
        e.syscall_nr = 0;
        e.syscall_enter_ns = 7;
    }));
    assert_eq!((s.syscall_nr, s.syscall_enter_ns), (Some(0), Some(7)));
    assert_eq!(s.syscall_exit, None);
    // Emitted at its syscall's exit (bit 6): the exit time is end_ns, the return value
    // syscall_ret; without IN_SYSCALL the bit means nothing.
    let exited = cow(&event(|e| {
        e.flags = flags::IN_SYSCALL | flags::SYSCALL_EXITED;
        e.syscall_nr = 2;
        e.syscall_enter_ns = 7;
        e.end_ns = 40;
        e.syscall_ret = -17;
    }));
    assert_eq!(flags::SYSCALL_EXITED, 1 << 6);
    assert_eq!(
        exited.syscall_exit,
        Some(SyscallExit {
            exit_ns: 40,
            ret: -17
        })
    );
    let lone = cow(&event(|e| {
        e.flags = flags::SYSCALL_EXITED;
        e.syscall_ret = 5;
    }));
    assert_eq!((lone.syscall_nr, lone.syscall_exit), (None, None));
}

#[test]
fn the_event_layout_is_pinned() {
    // 128 bytes of fields (the syscall's return value at 120), 72 of copy-up phases, the
    // comm, then the path.
    assert_eq!(size_of::<CowEvent>(), 128 + 72 + 16 + PATH_BUF);
    assert_eq!(std::mem::offset_of!(CowEvent, syscall_ret), 120);
    assert_eq!(std::mem::offset_of!(CowEvent, phases), 128);
    assert_eq!(std::mem::offset_of!(CowEvent, comm), 200);
    assert_eq!(size_of::<SyscallEnd>(), 40);
}

#[test]
fn zero_ids_are_unknown_and_fields_copy_through() {
    let e = cow(&event(|e| {
        e.mount_id = 0;
        e.lower_idx = 0;
        e.pid = 11;
        e.tid = 12;
        e.mnt_ns = 13;
        e.dev = 14;
        e.result = -28;
        e.mode = 0o100_644;
        e.size_bytes = 15;
        e.bytes_copied = 16;
        e.cgroup_id = 17;
        e.root_ino = 18;
        e.end_ns = 19;
        e.latency_ns = 20;
    }));
    assert_eq!((e.mount_id, e.lower_idx), (None, None));
    assert_eq!(
        (e.pid, e.tid, e.mnt_ns, e.kdev, e.result, e.mode),
        (11, 12, 13, 14, -28, 0o100_644)
    );
    assert_eq!(
        (
            e.size_bytes,
            e.bytes_copied,
            e.cgroup_id,
            e.root_ino,
            e.end_ns,
            e.latency_ns
        ),
        (15, 16, 17, 18, 19, 20)
    );
    let e = cow(&event(|e| {
        e.mount_id = 3;
        e.lower_idx = 1;
    }));
    assert_eq!((e.mount_id, e.lower_idx), (Some(3), Some(1)));
}

#[test]
fn path_and_comm_bounds() {
    // A full buffer of 256 one-letter components, leaf first: accepted, root first.
    let full = cow(&event(|e| {
        for (i, c) in e.path.chunks_mut(2).enumerate() {
            c[0] = b'a' + u8::try_from(i % 26).unwrap();
            c[1] = 0;
        }
        e.path_len = u32::try_from(PATH_BUF).unwrap();
    }));
    let mut want: Vec<String> = (0..PATH_BUF / 2)
        .map(|i| char::from(b'a' + u8::try_from(i % 26).unwrap()).to_string())
        .collect();
    want.reverse();
    assert_eq!(full.path, want.join("/"));
    let over = u32::try_from(PATH_BUF + 1).unwrap();
    assert!(matches!(
        decode(&event(|e| e.path_len = over)),
        Err(DecodeError::BadPath { len }) if len == over
    ));
    // Only the first path_len bytes count.
    let cut = cow(&event(|e| {
        e.path[..6].copy_from_slice(b"f\0d\0x\0");
        e.path_len = 4;
    }));
    assert_eq!(cut.path, "d/f");
    // A 16-byte comm without a NUL is kept whole; with one, cut there.
    let c = cow(&event(|e| e.comm = *b"abcdefghijklmnop"));
    assert_eq!(c.comm, "abcdefghijklmnop");
    let c = cow(&event(|e| e.comm[..5].copy_from_slice(b"sh\0xy")));
    assert_eq!(c.comm, "sh");
}

#[test]
fn short_samples_and_unknown_records_are_errors() {
    let whole = event(|_| {});
    assert!(decode(&whole).is_ok());
    let short = whole.len() - 1;
    assert!(matches!(
        decode(&whole[..short]),
        Err(DecodeError::Short { len }) if len == short
    ));
    assert!(matches!(
        decode(&[1, 0]),
        Err(DecodeError::Short { len: 2 })
    ));
    // 1, 2 and 3 are the event, syscall-end and mount records; 4 is no record.
    assert!(matches!(
        decode(&event(|e| e.record = 4)),
        Err(DecodeError::UnknownRecord { tag: 4 })
    ));
    let end = SyscallEnd {
        record: RECORD_SYSCALL_END,
        tid: 5,
        syscall_nr: 257,
        _pad: 0,
        ret: -2,
        enter_ns: 10,
        exit_ns: 30,
    };
    let bytes = bytes_of(&end);
    assert!(matches!(decode(&bytes), Ok(Record::SyscallEnd(e)) if e == end));
    assert!(matches!(
        decode(&bytes[..bytes.len() - 1]),
        Err(DecodeError::Short { len: 39 })
    ));
}

/// The phases travel whole, and only the phases whose `seen` bit is set are shown; `other` is
/// the latency minus the shown ones, so the sum is exact.
#[test]
fn phases_decode_and_unseen_phases_are_null() {
    use cowprof::event::{CopyUpPhases, DataMethod};
    use profiler_common::{phase_seen, Phases};
    let wire = Phases {
        metadata_ns: 10,
        data_ns: 200,
        fsync_ns: 30,
        link_ns: 4,
        offcpu_block_ns: 500,
        offcpu_other_ns: 60,
        data_clone_bytes: 0,
        data_splice_bytes: 4096,
        seen: phase_seen::FSYNC | phase_seen::OFFCPU | phase_seen::DATA_BYTES,
        _pad: 0,
    };
    let raw = cow(&event(|e| {
        e.latency_ns = 1000;
        e.phases = wire;
    }));
    assert_eq!(raw.phases, wire);
    let p = CopyUpPhases::from_wire(&raw.phases, 1000, true);
    assert_eq!(
        p,
        CopyUpPhases {
            metadata_ns: None,
            data_ns: None,
            data_method: Some(DataMethod::Splice),
            data_bytes: Some(4096),
            fsync_ns: Some(30),
            link_ns: None,
            offcpu_block_ns: Some(500),
            offcpu_other_ns: Some(60),
            other_ns: 1000 - 30 - 500 - 60,
        }
    );
    assert_eq!(p.values().iter().flatten().sum::<u64>(), 1000);
    // A clone wins over the splice fallback; a copy-up without data shows no method.
    let all = Phases {
        data_clone_bytes: 4096,
        data_splice_bytes: 0,
        seen: 0b11_1111,
        ..wire
    };
    let p = CopyUpPhases::from_wire(&all, 1000, true);
    assert_eq!(p.data_method, Some(DataMethod::Clone));
    assert_eq!(p.other_ns, 1000 - 10 - 200 - 30 - 4 - 500 - 60);
    let p = CopyUpPhases::from_wire(&all, 1000, false);
    assert_eq!(
        (p.data_method, p.data_bytes, p.data_ns),
        (None, Some(0), Some(0))
    );
}
