//! Integration tests on real qcow2 files (4 MiB) in temporary directories.

mod common;

use common::{CHAIN_VIEW, LockHolder, MIB, SIZE, Scratch, assert_view};
use std::path::{Path, PathBuf};

use snaptree_qemu_img::{self as qi, Error};

fn no_progress() -> impl FnMut(f64) {
    |_| {}
}

#[test]
fn create_and_info() {
    let s = Scratch::new();
    let img = s.path("disk.qcow2");
    qi::create(&img, SIZE).unwrap();
    let info = qi::info(&img).unwrap();
    assert_eq!(info.virtual_size, SIZE);
    assert_eq!(info.format, "qcow2");
    assert_eq!(info.backing_filename, None);
    assert!(info.snapshots.is_empty());
    assert!(qi::io_verify_pattern(&img, 0, 0, SIZE).unwrap());

    let err = qi::create(&img, SIZE).unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists { ref image } if *image == img),
        "{err:?}"
    );
}

#[test]
fn overlay_chain_reads_through_layers() {
    let s = Scratch::new();
    let (base, mid, top) = s.chain();
    assert_view(&top, &CHAIN_VIEW);
    assert_view(&mid, &[0xaa, 0xbb, 0xaa, 0xaa]);

    let info = qi::info(&top).unwrap();
    assert_eq!(info.virtual_size, SIZE);
    assert_eq!(info.backing_filename.as_deref(), mid.to_str());
    assert_eq!(info.full_backing_filename.as_deref(), Some(mid.as_path()));
    assert_eq!(info.backing_format.as_deref(), Some("qcow2"));

    let chain = qi::backing_chain(&top).unwrap();
    let names: Vec<_> = chain.iter().map(|i| i.filename.clone()).collect();
    let expected: Vec<_> = [&top, &mid, &base]
        .iter()
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn mid_chain_commit_then_unsafe_rebase_preserves_top() {
    let s = Scratch::new();
    let (base, mid, top) = s.chain();
    let before = qi::content_digest(&top, None, &mut no_progress()).unwrap();

    qi::commit(&mid, &mut no_progress()).unwrap();
    // Commit empties MID and puts its data into BASE.
    assert_eq!(qi::allocated_bytes(&mid).unwrap(), 0);
    assert_view(&base, &[0xaa, 0xbb, 0xaa, 0xaa]);

    qi::rebase_unsafe(&top, Some(&base)).unwrap();
    assert_eq!(
        qi::info(&top).unwrap().full_backing_filename.as_deref(),
        Some(base.as_path())
    );
    std::fs::remove_file(&mid).unwrap();
    assert_view(&top, &CHAIN_VIEW);
    assert_eq!(
        qi::content_digest(&top, None, &mut no_progress()).unwrap(),
        before
    );
}

#[test]
fn commit_reports_progress_up_to_one() {
    let s = Scratch::new();
    let base = s.path("base.qcow2");
    let top = s.path("top.qcow2");
    qi::create(&base, SIZE).unwrap();
    qi::create_overlay(&top, &base).unwrap();
    qi::io_write_pattern(&top, 0x5a, 0, SIZE).unwrap();

    let mut seen = Vec::new();
    qi::commit(&top, &mut |f| seen.push(f)).unwrap();
    // Intermediate records depend on how qemu-img's job is scheduled (on a loaded machine a
    // 4 MiB commit can finish between two reports), so only their shape is asserted here;
    // the parser of real records is unit-tested in progress.rs.
    assert_eq!(seen.last(), Some(&1.0), "{seen:?}");
    assert!(seen.iter().all(|f| (0.0..=1.0).contains(f)), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(qi::io_verify_pattern(&base, 0x5a, 0, SIZE).unwrap());
    assert_eq!(qi::allocated_bytes(&top).unwrap(), 0);
}

#[test]
fn safe_rebase_preserves_data() {
    let s = Scratch::new();
    let (base, mid, top) = s.chain();

    // Skip MID: its 0xbb must be copied into TOP.
    let mut seen = Vec::new();
    qi::rebase_safe(&top, Some(&base), &mut |f| seen.push(f)).unwrap();
    assert_eq!(seen.last(), Some(&1.0));
    assert_eq!(
        qi::info(&top).unwrap().full_backing_filename.as_deref(),
        Some(base.as_path())
    );
    std::fs::remove_file(&mid).unwrap();
    assert_view(&top, &CHAIN_VIEW);

    // Flatten: TOP becomes standalone with everything.
    qi::rebase_safe(&top, None, &mut no_progress()).unwrap();
    assert_eq!(qi::info(&top).unwrap().backing_filename, None);
    std::fs::remove_file(&base).unwrap();
    assert_view(&top, &CHAIN_VIEW);
}

#[test]
fn unsafe_rebase_only_rewrites_the_header() {
    let s = Scratch::new();
    let (_base, _mid, top) = s.chain();
    qi::rebase_unsafe(&top, None).unwrap();
    assert_eq!(qi::info(&top).unwrap().backing_filename, None);
    // Only TOP's own 0xcc remains; what came from below now reads as zeroes.
    assert_view(&top, &[0, 0, 0xcc, 0]);
}

#[test]
fn allocated_bytes_counts_one_layer_only() {
    let s = Scratch::new();
    let base = s.path("base.qcow2");
    let top = s.path("top.qcow2");
    qi::create(&base, SIZE).unwrap();
    qi::io_write_pattern(&base, 0x11, 0, SIZE).unwrap();
    qi::create_overlay(&top, &base).unwrap();
    assert_eq!(qi::allocated_bytes(&top).unwrap(), 0);
    assert_eq!(qi::allocated_bytes(&base).unwrap(), SIZE);

    qi::io_write_pattern(&top, 0x22, MIB, MIB).unwrap();
    let top_bytes = qi::allocated_bytes(&top).unwrap();
    assert!(top_bytes >= MIB, "{top_bytes}");
    assert!(top_bytes < SIZE, "{top_bytes}");
}

#[test]
fn digest_ignores_layering_and_follows_content() {
    let s = Scratch::new();
    let (_base, _mid, top) = s.chain();

    // The same bytes written into a single flat image.
    let flat = s.path("flat.qcow2");
    qi::create(&flat, SIZE).unwrap();
    for (i, &p) in CHAIN_VIEW.iter().enumerate() {
        qi::io_write_pattern(&flat, p, i as u64 * MIB, MIB).unwrap();
    }
    let layered = qi::content_digest(&top, None, &mut no_progress()).unwrap();
    let mut seen = Vec::new();
    let flat_digest = qi::content_digest(&flat, None, &mut |f| seen.push(f)).unwrap();
    assert_eq!(layered.len(), 64);
    assert!(layered.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(layered, flat_digest);
    assert_eq!(seen.last(), Some(&1.0));

    // A copy flattened by qemu itself also matches.
    let copy = s.path("copy.qcow2");
    qi::create_overlay(&copy, &top).unwrap();
    qi::rebase_safe(&copy, None, &mut no_progress()).unwrap();
    assert_eq!(
        qi::content_digest(&copy, None, &mut no_progress()).unwrap(),
        layered
    );

    qi::io_write_pattern(&flat, 0xcc, 3 * MIB + 4096, 512).unwrap();
    assert_ne!(
        qi::content_digest(&flat, None, &mut no_progress()).unwrap(),
        layered
    );

    // Explicitly written zeroes equal never-written space; the size still matters.
    let a = s.path("a.qcow2");
    let b = s.path("b.qcow2");
    let c = s.path("c.qcow2");
    qi::create(&a, SIZE).unwrap();
    qi::create(&b, SIZE).unwrap();
    qi::create(&c, 2 * SIZE).unwrap();
    qi::io_write_pattern(&b, 0, 0, SIZE).unwrap();
    let da = qi::content_digest(&a, None, &mut no_progress()).unwrap();
    assert_eq!(
        da,
        qi::content_digest(&b, None, &mut no_progress()).unwrap()
    );
    assert_ne!(
        da,
        qi::content_digest(&c, None, &mut no_progress()).unwrap()
    );
}

#[test]
fn internal_snapshot_round_trip() {
    let s = Scratch::new();
    let img = s.path("disk.qcow2");
    qi::create(&img, SIZE).unwrap();
    qi::io_write_pattern(&img, 0x01, 0, SIZE).unwrap();
    let tag_a = "3f1c8a7e-0000-4000-8000-00000000000a";
    let tag_b = "3f1c8a7e-0000-4000-8000-00000000000b";
    qi::snapshot_create(&img, tag_a).unwrap();
    let digest_a = qi::content_digest(&img, None, &mut no_progress()).unwrap();

    qi::io_write_pattern(&img, 0x02, MIB, MIB).unwrap();
    qi::snapshot_create(&img, tag_b).unwrap();
    qi::io_write_pattern(&img, 0x03, 0, MIB).unwrap();

    let list = qi::snapshot_list(&img).unwrap();
    let names: Vec<_> = list.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, [tag_a, tag_b]);
    assert!(list.iter().all(|s| s.date_sec > 0 && s.vm_state_size == 0));
    assert_ne!(list[0].id, list[1].id);

    // Reading inside a snapshot without applying it.
    assert!(qi::io_verify_snapshot_pattern(&img, tag_a, 0x01, 0, SIZE).unwrap());
    assert!(!qi::io_verify_snapshot_pattern(&img, tag_b, 0x01, 0, SIZE).unwrap());
    assert!(qi::io_verify_snapshot_pattern(&img, tag_b, 0x02, MIB, MIB).unwrap());
    assert_eq!(
        qi::content_digest(&img, Some(tag_a), &mut no_progress()).unwrap(),
        digest_a
    );

    qi::snapshot_apply(&img, tag_a).unwrap();
    assert!(qi::io_verify_pattern(&img, 0x01, 0, SIZE).unwrap());
    assert_eq!(
        qi::content_digest(&img, None, &mut no_progress()).unwrap(),
        digest_a
    );

    qi::snapshot_delete(&img, tag_a).unwrap();
    let names: Vec<_> = qi::snapshot_list(&img)
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, [tag_b]);

    // Unknown tag: qemu's own message comes through.
    let err = qi::snapshot_apply(&img, tag_a).unwrap_err();
    assert!(matches!(err, Error::Failed { .. }), "{err:?}");
    assert!(err.to_string().contains(img.to_str().unwrap()), "{err}");
}

#[test]
fn duplicate_and_numeric_tags() {
    let s = Scratch::new();
    let img = s.path("disk.qcow2");
    qi::create(&img, SIZE).unwrap();
    // qemu-img allows duplicates: callers must key by unique tags.
    qi::snapshot_create(&img, "dup").unwrap();
    qi::snapshot_create(&img, "dup").unwrap();
    assert_eq!(qi::snapshot_list(&img).unwrap().len(), 2);
    qi::snapshot_delete(&img, "dup").unwrap();
    assert_eq!(qi::snapshot_list(&img).unwrap().len(), 1);

    let left = qi::snapshot_list(&img).unwrap()[0].id.clone();
    for tag in ["", left.as_str()] {
        let err = qi::snapshot_create(&img, tag).unwrap_err();
        assert!(matches!(err, Error::InvalidTag { .. }), "{err:?}");
        let err = qi::snapshot_apply(&img, tag).unwrap_err();
        assert!(matches!(err, Error::InvalidTag { .. }), "{err:?}");
    }
    // An all-digit tag that is no snapshot's id (libvirt's creation seconds) is a tag.
    qi::io_write_pattern(&img, 0x5a, 0, MIB).unwrap();
    qi::snapshot_create(&img, "1700000300").unwrap();
    qi::io_write_pattern(&img, 0x00, 0, MIB).unwrap();
    qi::snapshot_apply(&img, "1700000300").unwrap();
    assert!(qi::io_verify_pattern(&img, 0x5a, 0, MIB).unwrap());
    qi::snapshot_delete(&img, "1700000300").unwrap();
    let tags: Vec<String> = qi::snapshot_list(&img)
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(tags, vec!["dup".to_string()]);
}

#[test]
fn verify_distinguishes_mismatch_from_errors() {
    let s = Scratch::new();
    let img = s.path("disk.qcow2");
    qi::create(&img, SIZE).unwrap();
    qi::io_write_pattern(&img, 0x7f, 0, MIB).unwrap();
    assert!(qi::io_verify_pattern(&img, 0x7f, 0, MIB).unwrap());
    assert!(!qi::io_verify_pattern(&img, 0x7e, 0, MIB).unwrap());
    // Half matches, half does not.
    assert!(!qi::io_verify_pattern(&img, 0x7f, 0, 2 * MIB).unwrap());

    let err = qi::io_verify_pattern(&img, 0, 0, 2 * SIZE).unwrap_err();
    assert!(matches!(err, Error::Failed { .. }), "{err:?}");
    let missing = s.path("missing.qcow2");
    let err = qi::io_verify_pattern(&missing, 0, 0, MIB).unwrap_err();
    assert!(
        matches!(err, Error::Failed { ref message, .. } if message.contains("No such file")),
        "{err:?}"
    );
    assert!(err.to_string().contains(missing.to_str().unwrap()), "{err}");
}

#[test]
fn read_write_holder_locks_image_and_its_overlays() {
    let s = Scratch::new();
    let base = s.path("base.qcow2");
    let top = s.path("top.qcow2");
    qi::create(&base, SIZE).unwrap();
    qi::create_overlay(&top, &base).unwrap();
    qi::io_write_pattern(&top, 0x33, 0, MIB).unwrap();

    {
        let _holder = LockHolder::hold(&base);
        let locked = |r: Result<(), Error>| match r {
            Err(Error::Locked { image, message }) => {
                assert_eq!(image, base, "{message}");
                assert!(message.contains("lock"), "{message}");
            }
            other => panic!("expected Locked, got {other:?}"),
        };
        locked(qi::check_writable(&base));
        locked(qi::snapshot_create(&base, "t-1a"));
        locked(qi::info(&base).map(drop));
        // The snapshot list, read in process, refuses the held image as qemu-img info does.
        locked(qi::snapshot_list(&base).map(drop));
        // The overlay is fine itself, but its backing is held: named as the locked file.
        locked(qi::check_writable(&top));
        locked(qi::commit(&top, &mut no_progress()));
        let err = qi::check_writable(&base).unwrap_err();
        assert!(err.to_string().contains(base.to_str().unwrap()), "{err}");

        // Inspection that ignores locks still works.
        assert_eq!(qi::info_force_share(&base).unwrap().virtual_size, SIZE);
    }
    qi::check_writable(&base).unwrap();
    qi::check_writable(&top).unwrap();
    qi::commit(&top, &mut no_progress()).unwrap();
}

#[test]
fn read_only_holder_blocks_writers_but_not_info() {
    let s = Scratch::new();
    let img = s.path("disk.qcow2");
    qi::create(&img, SIZE).unwrap();
    {
        let _holder = LockHolder::hold_read_only(&img);
        // `qemu-img info` would not notice this holder (nor the snapshot list, read in
        // process); check_writable does.
        qi::info(&img).unwrap();
        qi::snapshot_list(&img).unwrap();
        let err = qi::check_writable(&img).unwrap_err();
        assert!(
            matches!(err, Error::Locked { ref image, .. } if *image == img),
            "{err:?}"
        );
        let err = qi::io_write_pattern(&img, 1, 0, MIB).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    }
    qi::check_writable(&img).unwrap();
}

/// What qemu itself answers to opening `path` read-write with its chain read-only: `None`
/// when it opens, else the file its lock message names. The oracle of the in-process
/// lock check: `qemu-io` run here directly, sharing no code with the crate.
fn qemu_io_verdict(path: &Path) -> Option<PathBuf> {
    let out = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "quit"])
        .arg(path)
        .output()
        .unwrap();
    if out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(text.contains("lock"), "{text}");
    let named = text
        .split("image [")
        .nth(1)
        .and_then(|r| r.split("]?").next());
    Some(PathBuf::from(named.expect("a named image")))
}

fn verdict(r: Result<(), Error>) -> Option<PathBuf> {
    match r {
        Ok(()) => None,
        Err(Error::Locked { image, message }) => {
            assert!(message.contains("lock"), "{message}");
            Some(image)
        }
        Err(other) => panic!("expected Ok or Locked, got {other:?}"),
    }
}

/// The in-process check answers as qemu-io does for every kind of holder (read-write,
/// read-only, force-share) on the image and on its backing, and names the same file.
#[test]
fn in_process_lock_check_agrees_with_qemu_io() {
    let s = Scratch::new();
    let base = s.path("base.qcow2");
    let top = s.path("top.qcow2");
    qi::create(&base, SIZE).unwrap();
    qi::create_overlay(&top, &base).unwrap();
    type Hold = fn(&Path) -> LockHolder;
    let holders: [(&str, Hold); 3] = [
        ("read-write", LockHolder::hold),
        ("read-only", LockHolder::hold_read_only),
        ("force-share", LockHolder::hold_force_share),
    ];
    let mut locked = 0;
    for (kind, hold) in holders {
        for held in [&base, &top] {
            let _holder = hold(held);
            for checked in [&base, &top] {
                let want = qemu_io_verdict(checked);
                locked += usize::from(want.is_some());
                assert_eq!(
                    verdict(qi::check_writable(checked)),
                    want,
                    "{kind} holder on {}, checking {}",
                    held.display(),
                    checked.display()
                );
                assert_eq!(
                    verdict(qi::check_writable_by_qemu_io(checked)),
                    want,
                    "qemu-io path"
                );
            }
        }
    }
    // Not vacuous: the read-write and read-only holders block.
    assert!(locked >= 5, "{locked}");
    // Nothing held any more.
    qi::check_writable(&top).unwrap();
    qi::check_writable(&base).unwrap();
}

/// A chain the in-process check cannot follow (a backing of undeclared format) is still
/// checked, by qemu-io: a holder on the backing is found.
#[test]
fn lock_check_through_an_undeclared_backing_format() {
    let s = Scratch::new();
    let base = s.path("base.qcow2");
    let top = s.path("top.qcow2");
    qi::create(&base, SIZE).unwrap();
    qi::create_overlay(&top, &base).unwrap();
    // qemu-img no longer writes a backing without its format: turn the format extension
    // into one qemu ignores (an unknown type), as an image from an older qemu would be.
    let mut bytes = std::fs::read(&top).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == [0xE2, 0x79, 0x2A, 0xCA])
        .expect("a backing format extension");
    bytes[at..at + 4].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    std::fs::write(&top, bytes).unwrap();
    assert_eq!(qi::read_header(&top).unwrap().backing_format, None);
    let _holder = LockHolder::hold(&base);
    assert_eq!(verdict(qi::check_writable(&top)), Some(base.clone()));
}

/// The header reader agrees with `qemu-img info` on backing file, its format and size.
#[test]
fn header_agrees_with_qemu_img_info() {
    let s = Scratch::new();
    let base = s.path("base.qcow2");
    let top = s.path("top.qcow2");
    qi::create(&base, SIZE).unwrap();
    qi::create_overlay(&top, &base).unwrap();
    let h = qi::read_header(&top).unwrap();
    let info = qi::info(&top).unwrap();
    assert_eq!(h.backing, info.full_backing_filename);
    assert_eq!(h.backing_format.as_deref(), Some("qcow2"));
    assert_eq!(h.size, info.virtual_size);
    assert!(!h.external_data_file);
    let b = qi::read_header(&base).unwrap();
    assert_eq!((b.backing, b.backing_format), (None, None));
}

fn run(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
}

/// The in-process count of a layer's own data agrees with `qemu-img map` on images with
/// data, zeroed clusters (written as zeroes, and discarded over a backing), compressed
/// clusters, several L2 tables (4 KiB clusters) and a virtual size that ends mid-cluster.
#[test]
fn in_process_allocation_count_agrees_with_qemu_img_map() {
    let s = Scratch::new();
    let base = s.path("base.qcow2");
    let top = s.path("top.qcow2");
    let small = s.path("small.qcow2");
    let packed = s.path("packed.qcow2");
    qi::create(&base, SIZE).unwrap();
    qi::io_write_pattern(&base, 0x11, 0, SIZE / 2).unwrap();
    qi::create_overlay(&top, &base).unwrap();
    qi::io_write_pattern(&top, 0x22, MIB, MIB).unwrap();
    let base_s = base.to_str().unwrap();
    let top_s = top.to_str().unwrap();
    run("qemu-io", &["-f", "qcow2", "-c", "write -z 0 64k", top_s]);
    run("qemu-io", &["-f", "qcow2", "-c", "discard 128k 64k", top_s]);
    let small_s = small.to_str().unwrap();
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4096",
            small_s,
            "3000000",
        ],
    );
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 7 0 2999000", small_s],
    );
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -z 8192 4096", small_s],
    );
    let packed_s = packed.to_str().unwrap();
    run(
        "qemu-img",
        &[
            "convert", "-c", "-f", "qcow2", "-O", "qcow2", base_s, packed_s,
        ],
    );
    for image in [&base, &top, &small, &packed] {
        let by_map = qi::allocated_bytes_by_map(image).unwrap();
        assert_eq!(
            qi::allocated_bytes(image).unwrap(),
            by_map,
            "{}",
            image.display()
        );
    }
    // Not vacuous: every image holds data, and the zeroed and discarded clusters count 0.
    assert!(qi::allocated_bytes_by_map(&small).unwrap() > 2_000_000);
    assert!(qi::allocated_bytes_by_map(&packed).unwrap() > 0);
}

/// `qemu-img check`'s exit status (0 clean, 2 corrupt, 3 leaks only).
fn check_status(img: &Path) -> i32 {
    std::process::Command::new("qemu-img")
        .args(["check", "-q", "-f", "qcow2"])
        .arg(img)
        .output()
        .unwrap()
        .status
        .code()
        .unwrap()
}

/// Clears the COPIED flag (bit 63) of every data cluster's L2 entry of `img`, whose
/// clusters all have reference count 1: the state `qemu-img snapshot -d` leaves when it is
/// killed after lowering the reference counts of a deleted snapshot's clusters and before
/// setting the flags again (block/qcow2-snapshot.c: the refcount update, then "update the
/// copied flag on the current cluster offsets"). Returns how many entries it changed.
fn clear_copied_flags(img: &Path) -> usize {
    use std::io::{Read, Seek, SeekFrom, Write};
    const COPIED: u64 = 1 << 63;
    const OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut head = [0u8; 48];
    f.read_exact(&mut head).unwrap();
    let be32 = |at: usize| u32::from_be_bytes(head[at..at + 4].try_into().unwrap());
    let be64 = |at: usize| u64::from_be_bytes(head[at..at + 8].try_into().unwrap());
    let cluster = 1u64 << be32(20);
    let (l1_size, l1_offset) = (be32(36) as usize, be64(40));
    let mut l1 = vec![0u8; l1_size * 8];
    f.seek(SeekFrom::Start(l1_offset)).unwrap();
    f.read_exact(&mut l1).unwrap();
    let mut changed = 0;
    for e in l1.chunks_exact(8) {
        let l2_offset = u64::from_be_bytes(e.try_into().unwrap()) & OFFSET;
        if l2_offset == 0 {
            continue;
        }
        let mut l2 = vec![0u8; cluster as usize];
        f.seek(SeekFrom::Start(l2_offset)).unwrap();
        f.read_exact(&mut l2).unwrap();
        for entry in l2.chunks_exact_mut(8) {
            let v = u64::from_be_bytes((&*entry).try_into().unwrap());
            if v & COPIED != 0 {
                entry.copy_from_slice(&(v & !COPIED).to_be_bytes());
                changed += 1;
            }
        }
        f.seek(SeekFrom::Start(l2_offset)).unwrap();
        f.write_all(&l2).unwrap();
    }
    f.sync_all().unwrap();
    changed
}

#[test]
fn an_interrupted_snapshot_delete_is_repaired_without_loss() {
    let s = Scratch::new();
    // The state a delete killed mid-way leaves, made exactly: every data cluster with
    // reference count 1 and no COPIED flag. qemu-img check calls it corrupt (exit 2).
    let img = s.path("cut.qcow2");
    qi::create(&img, 64 * MIB).unwrap();
    qi::io_write_pattern(&img, 0x11, 0, 16 * MIB).unwrap();
    assert!(
        clear_copied_flags(&img) >= 256,
        "expected 256 data clusters"
    );
    assert_eq!(
        check_status(&img),
        2,
        "expected qemu-img check to report the COPIED-flag errors"
    );
    qi::repair_after_interrupted_snapshot_op(&img).unwrap();
    assert_eq!(
        check_status(&img),
        0,
        "the repaired image should check clean"
    );
    assert!(
        qi::io_verify_pattern(&img, 0x11, 0, 16 * MIB).unwrap(),
        "the content should be intact after the repair"
    );

    // And real deletes killed at spread-out moments (where a kill lands varies with the
    // machine's load, so landing in the window is not required): whatever each left is
    // repaired to a clean image with the live content and, if the table still lists it,
    // the snapshot intact.
    let pristine = s.path("pristine.qcow2");
    qi::create(&pristine, 256 * MIB).unwrap();
    qi::io_write_pattern(&pristine, 0x11, 0, 160 * MIB).unwrap();
    qi::snapshot_create(&pristine, "s1").unwrap();
    qi::io_write_pattern(&pristine, 0x22, 0, MIB).unwrap();
    let img = s.path("disk.qcow2");
    for attempt in 0..8u64 {
        let delay_ms = 4 + attempt * 7 % 29;
        std::fs::copy(&pristine, &img).unwrap();
        let mut child = std::process::Command::new("qemu-img")
            .args(["snapshot", "-f", "qcow2", "-d", "s1"])
            .arg(&img)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        qi::repair_after_interrupted_snapshot_op(&img).unwrap();
        assert_eq!(
            check_status(&img),
            0,
            "killed after {delay_ms} ms: the repaired image should check clean"
        );
        assert!(
            qi::io_verify_pattern(&img, 0x22, 0, MIB).unwrap()
                && qi::io_verify_pattern(&img, 0x11, MIB, 159 * MIB).unwrap(),
            "killed after {delay_ms} ms: the live content should be intact"
        );
        let tags: Vec<String> = qi::snapshot_list(&img)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        if tags.contains(&"s1".to_owned()) {
            qi::snapshot_apply(&img, "s1").unwrap();
            assert!(
                qi::io_verify_pattern(&img, 0x11, 0, 160 * MIB).unwrap(),
                "killed after {delay_ms} ms before the table changed: s1 should be intact"
            );
        }
    }
}

/// `qemu-img create -q -f qcow2 -b BACKING -F qcow2 PATH [-u SIZE]`, run directly: the
/// oracle the in-process overlay is compared with.
fn qemu_img_overlay(path: &Path, backing: &Path, unopened_size: Option<u64>) {
    let mut cmd = std::process::Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2"]);
    if unopened_size.is_some() {
        cmd.arg("-u");
    }
    cmd.arg("-b").arg(backing).args(["-F", "qcow2"]).arg(path);
    if let Some(size) = unopened_size {
        cmd.arg(size.to_string());
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "qemu-img create: {out:?}");
}

fn qemu_img_check_is_clean(image: &Path) {
    let out = std::process::Command::new("qemu-img")
        .args(["check", "-q", "-f", "qcow2"])
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "expected qemu-img check to find {} clean: {out:?}",
        image.display()
    );
}

#[test]
fn an_overlay_written_in_process_is_byte_for_byte_what_qemu_img_writes() {
    let s = Scratch::new();
    // Sizes: small, one L1 entry short, a partial L1 entry, and an L1 table of two
    // clusters (5 TiB: 10,240 entries); backing names absolute and relative.
    for (i, size) in [SIZE, 1 << 30, (1 << 30) + 512, 5 << 40]
        .into_iter()
        .enumerate()
    {
        let base = s.path(&format!("base{i}.qcow2"));
        qi::create(&base, size).unwrap();
        for relative in [false, true] {
            let backing = if relative {
                PathBuf::from(base.file_name().unwrap())
            } else {
                base.clone()
            };
            let ours = s.path(&format!("ours{i}{relative}.qcow2"));
            let theirs = s.path(&format!("theirs{i}{relative}.qcow2"));
            qi::create_overlay(&ours, &backing).unwrap();
            qemu_img_overlay(&theirs, &backing, None);
            let what = format!("size {size}, backing {}", backing.display());
            assert!(
                std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
                "expected the same bytes as qemu-img's overlay ({what})"
            );
            // Allocated alike, holes included: later writes into the metadata need no new
            // space in either (the space estimates count on it).
            let blocks = |p: &Path| std::os::unix::fs::MetadataExt::blocks(&p.metadata().unwrap());
            assert_eq!(
                blocks(&ours),
                blocks(&theirs),
                "expected as many blocks allocated as qemu-img's overlay ({what})"
            );
            qemu_img_check_is_clean(&ours);

            // The same for an overlay whose backing is not opened (a running VM's).
            let ours = s.path(&format!("ours-u{i}{relative}.qcow2"));
            let theirs = s.path(&format!("theirs-u{i}{relative}.qcow2"));
            qi::create_overlay_unopened(&ours, &backing, size).unwrap();
            qemu_img_overlay(&theirs, &backing, Some(size));
            assert!(
                std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
                "expected the same bytes as qemu-img -u's overlay ({what})"
            );
        }
    }
}

#[test]
fn an_overlay_written_in_process_reads_through_takes_writes_and_commits() {
    let s = Scratch::new();
    let base = s.path("base.qcow2");
    qi::create(&base, SIZE).unwrap();
    qi::io_write_pattern(&base, 0xaa, 0, SIZE).unwrap();
    let top = s.path("top.qcow2");
    qi::create_overlay(&top, &base).unwrap();
    let info = qi::info(&top).unwrap();
    assert_eq!(info.virtual_size, SIZE);
    assert_eq!(info.backing_filename.as_deref(), base.to_str());
    assert_eq!(info.backing_format.as_deref(), Some("qcow2"));
    assert!(
        qi::io_verify_pattern(&top, 0xaa, 0, SIZE).unwrap(),
        "reads through"
    );
    qi::io_write_pattern(&top, 0xbb, MIB, MIB).unwrap();
    qemu_img_check_is_clean(&top);
    assert!(qi::io_verify_pattern(&top, 0xbb, MIB, MIB).unwrap());
    assert!(qi::io_verify_pattern(&base, 0xaa, MIB, MIB).unwrap());
    qi::commit(&top, &mut no_progress()).unwrap();
    assert!(
        qi::io_verify_pattern(&base, 0xbb, MIB, MIB).unwrap(),
        "committed"
    );
    assert!(qi::io_verify_pattern(&base, 0xaa, 0, MIB).unwrap());
}

#[test]
fn an_overlay_is_refused_over_an_existing_file_and_a_broken_backing_gets_qemus_word() {
    let s = Scratch::new();
    let base = s.path("base.qcow2");
    qi::create(&base, SIZE).unwrap();
    let top = s.path("top.qcow2");
    std::fs::write(&top, b"guest data").unwrap();
    let err = qi::create_overlay(&top, &base).unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists { ref image } if *image == top),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read(&top).unwrap(),
        b"guest data",
        "left as it was"
    );
    // Not a qcow2 image: left to qemu-img, which says why.
    let raw = s.path("raw.img");
    std::fs::write(&raw, vec![0u8; 4096]).unwrap();
    let over = s.path("over.qcow2");
    let err = qi::create_overlay(&over, &raw).unwrap_err();
    assert!(
        matches!(err, Error::Failed { .. }),
        "expected qemu-img's failure: {err:?}"
    );
    let missing = s.path("missing.qcow2");
    let err = qi::create_overlay(&over, &missing).unwrap_err();
    assert!(
        err.to_string().contains("failed"),
        "expected qemu-img's failure for a missing backing: {err}"
    );
    // The whole chain is checked, as qemu-img opens it: a missing grand-backing, and a
    // backing with an incompatible feature qemu does not know, fail as qemu-img fails.
    let mid = s.path("mid.qcow2");
    qi::create_overlay(&mid, &base).unwrap();
    std::fs::rename(&base, s.path("moved.qcow2")).unwrap();
    let err = qi::create_overlay(&over, &mid).unwrap_err();
    assert!(
        matches!(err, Error::Failed { ref message, .. } if message.contains("backing")),
        "expected qemu-img's failure for a missing grand-backing: {err:?}"
    );
    assert!(!over.exists(), "expected no overlay left behind");
    let odd = s.path("odd.qcow2");
    qi::create(&odd, SIZE).unwrap();
    let mut bytes = std::fs::read(&odd).unwrap();
    bytes[72] |= 0x80; // incompatible feature bit 63
    std::fs::write(&odd, &bytes).unwrap();
    let err = qi::create_overlay(&over, &odd).unwrap_err();
    assert!(
        matches!(err, Error::Failed { ref message, .. } if message.contains("feature")),
        "expected qemu-img's failure for an unknown incompatible feature: {err:?}"
    );
}
