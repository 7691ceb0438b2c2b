use super::*;

fn pass(s: &str) -> Passphrase {
    Passphrase::new(s.into())
}

/// A fresh store in a tempdir (cheap KDF).
fn new_store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::create_for_tests(&tmp.path().join("store"), &pass("pw")).unwrap();
    (tmp, store)
}

/// Raw sled tree of a kind, to tamper with sealed bytes.
fn raw(store: &Store, kind: RecordKind) -> &sled::Tree {
    store.tree(kind)
}

#[test]
fn store__should_round_trip_values_across_reopen() {
    // Given a store with values of two kinds
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::create_for_tests(&dir, &pass("pw")).unwrap();
    store
        .put(RecordKind::KeyShare, b"key-1", b"share bytes")
        .unwrap();
    store
        .put(RecordKind::KeyInfo, b"key-1", b"info bytes")
        .unwrap();
    store
        .put(RecordKind::KeyShare, b"key-1", b"share bytes v2")
        .unwrap();
    store.flush().unwrap();
    drop(store);

    // When reopening with the same passphrase
    let store = Store::open(&dir, &pass("pw")).unwrap();

    // Then the values read back, per kind
    assert_eq!(
        store
            .get(RecordKind::KeyShare, b"key-1")
            .unwrap()
            .unwrap()
            .expose(),
        b"share bytes v2"
    );
    assert_eq!(
        store
            .get(RecordKind::KeyInfo, b"key-1")
            .unwrap()
            .unwrap()
            .expose(),
        b"info bytes"
    );
    assert!(store.get(RecordKind::AuxInfo, b"key-1").unwrap().is_none());
    assert!(store.get(RecordKind::KeyShare, b"key-2").unwrap().is_none());
    // And a clone shares the same store
    let clone = store.clone();
    clone.put(RecordKind::Primes, b"p", b"q").unwrap();
    assert!(store.contains(RecordKind::Primes, b"p").unwrap());
    assert_eq!(store.dir(), dir);
}

#[test]
fn create__should_use_the_fixed_kdf_params() {
    // Given a store created through the production path
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::create(&dir, &pass("pw")).unwrap();
    store.put(RecordKind::KeyShare, b"k", b"v").unwrap();
    // Then the KDF record holds m = 64 MiB, t = 3, p = 1
    let meta = store.inner.db.open_tree(META_TREE).unwrap();
    let record = KdfRecord::decode(&meta.get(KDF_KEY).unwrap().unwrap()).unwrap();
    assert_eq!(
        record.params,
        KdfParams {
            m_kib: 65536,
            t: 3,
            p: 1
        }
    );
    drop((meta, store));
    // And it reopens
    let store = Store::open(&dir, &pass("pw")).unwrap();
    assert_eq!(
        store
            .get(RecordKind::KeyShare, b"k")
            .unwrap()
            .unwrap()
            .expose(),
        b"v"
    );
}

#[test]
fn create__should_refuse_an_existing_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::create_for_tests(&dir, &pass("pw")).unwrap();
    store.put(RecordKind::KeyShare, b"k", b"v").unwrap();
    drop(store);
    let err = Store::create_for_tests(&dir, &pass("other")).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.display().to_string()));
    // And the existing store is untouched
    let store = Store::open(&dir, &pass("pw")).unwrap();
    assert_eq!(
        store
            .get(RecordKind::KeyShare, b"k")
            .unwrap()
            .unwrap()
            .expose(),
        b"v"
    );
}

#[test]
fn create__should_make_the_directory_private() {
    let (_tmp, store) = new_store();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }
    let _ = store;
}

#[test]
fn open__should_refuse_wrong_passphrase() {
    // Given a store
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    drop(Store::create_for_tests(&dir, &pass("right")).unwrap());
    // When opening with another passphrase
    let err = Store::open(&dir, &pass("wrong")).unwrap_err();
    // Then it is refused with an actionable message
    assert!(matches!(err, StoreError::WrongPassphrase { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("the store passphrase is wrong: the check record does not decrypt"),
        "{msg}"
    );
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
}

#[test]
fn open__should_report_not_found_without_creating_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing-here");
    let err = Store::open(&missing, &pass("pw")).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("nothing-here"));
    assert!(!missing.exists());
    // An empty existing directory is not a store either
    let err = Store::open(tmp.path(), &pass("pw")).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

#[test]
fn open__should_refuse_unknown_kdf_version() {
    // Given a store whose KDF record claims version 2
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::create_for_tests(&dir, &pass("pw")).unwrap();
    let meta = store.inner.db.open_tree(META_TREE).unwrap();
    let mut record = meta.get(KDF_KEY).unwrap().unwrap().to_vec();
    record[0] = 2;
    meta.insert(KDF_KEY, record).unwrap();
    store.flush().unwrap();
    drop((meta, store));
    // When opening it
    let err = Store::open(&dir, &pass("pw")).unwrap_err();
    // Then the format is refused
    assert!(
        matches!(err, StoreError::UnsupportedFormat { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("version 2"), "{err}");
}

#[test]
fn open__should_refuse_a_store_without_meta_records() {
    // Given a sled database that is not a sealed store
    let tmp = tempfile::tempdir().unwrap();
    drop(sled::Config::new().path(tmp.path()).open().unwrap());
    // Then open refuses it, and create refuses to overwrite it
    let err = Store::open(tmp.path(), &pass("pw")).unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedFormat { .. }),
        "{err:?}"
    );
    let err = Store::create_for_tests(tmp.path(), &pass("pw")).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
}

#[test]
fn open__should_fail_while_another_handle_holds_the_store() {
    let (_tmp, store) = new_store();
    let err = Store::open(store.dir(), &pass("pw")).unwrap_err();
    assert!(matches!(err, StoreError::Io(_)), "{err:?}");
}

#[test]
fn get__should_fail_when_value_copied_to_another_key() {
    // Given a value sealed under one key
    let (_tmp, store) = new_store();
    store
        .put(RecordKind::KeyShare, b"alice", b"alice share")
        .unwrap();
    // When its sealed bytes are copied under another key
    let tree = raw(&store, RecordKind::KeyShare);
    let sealed = tree.get(b"alice").unwrap().unwrap();
    tree.insert(b"mallory", sealed).unwrap();
    // Then reading it fails as corrupt, naming kind and key
    let err = store.get(RecordKind::KeyShare, b"mallory").unwrap_err();
    match &err {
        StoreError::Corrupt { kind, key, .. } => {
            assert_eq!(*kind, "key_share");
            assert_eq!(key, &hex::encode(b"mallory"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&hex::encode(b"mallory")));
    // And the original still opens
    assert_eq!(
        store
            .get(RecordKind::KeyShare, b"alice")
            .unwrap()
            .unwrap()
            .expose(),
        b"alice share"
    );
}

#[test]
fn get__should_fail_when_value_copied_into_another_kind() {
    // Given a presignature
    let (_tmp, store) = new_store();
    store
        .put(RecordKind::Presignature, b"id", b"presig")
        .unwrap();
    // When its sealed bytes are copied into the key-share tree, same key
    let sealed = raw(&store, RecordKind::Presignature)
        .get(b"id")
        .unwrap()
        .unwrap();
    raw(&store, RecordKind::KeyShare)
        .insert(b"id", sealed)
        .unwrap();
    // Then it does not open as a key share
    let err = store.get(RecordKind::KeyShare, b"id").unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                kind: "key_share",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn get__should_fail_when_a_ciphertext_byte_is_flipped() {
    let (_tmp, store) = new_store();
    store.put(RecordKind::AuxInfo, b"k", b"aux info").unwrap();
    let tree = raw(&store, RecordKind::AuxInfo);
    let mut sealed = tree.get(b"k").unwrap().unwrap().to_vec();
    sealed[1 + 24 + 2] ^= 0x80;
    tree.insert(b"k", sealed).unwrap();
    let err = store.get(RecordKind::AuxInfo, b"k").unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                kind: "aux_info",
                ..
            }
        ),
        "{err:?}"
    );
    // And take leaves the corrupt record in place
    assert!(store.take(RecordKind::AuxInfo, b"k").is_err());
    assert!(store.contains(RecordKind::AuxInfo, b"k").unwrap());
}

#[test]
fn get__should_report_unknown_seal_version_as_unsupported() {
    let (_tmp, store) = new_store();
    store.put(RecordKind::KeyInfo, b"k", b"v").unwrap();
    let tree = raw(&store, RecordKind::KeyInfo);
    let mut sealed = tree.get(b"k").unwrap().unwrap().to_vec();
    sealed[0] = 9;
    tree.insert(b"k", sealed).unwrap();
    let err = store.get(RecordKind::KeyInfo, b"k").unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedFormat { .. }),
        "{err:?}"
    );
    // And a truncated value is corrupt
    tree.insert(b"k", &[1u8, 2, 3][..]).unwrap();
    let err = store.get(RecordKind::KeyInfo, b"k").unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[test]
fn disk__should_not_contain_plaintext_values() {
    // Given values containing a marker, in every kind
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let marker = b"PLAINTEXT-MARKER-7f3a9c";
    let store = Store::create_for_tests(&dir, &pass("pw")).unwrap();
    let mut value = b"prefix ".to_vec();
    value.extend_from_slice(marker);
    value.extend_from_slice(&[0x11; 4096]);
    for (i, kind) in RecordKind::ALL.iter().enumerate() {
        for j in 0..20u8 {
            store.put(*kind, &[i as u8, j], &value).unwrap();
        }
    }
    // Record keys are stored in clear: a control that the scan sees data
    let key_marker = b"KEY-MARKER-51d2e8";
    store.put(RecordKind::KeyInfo, key_marker, &value).unwrap();
    store.flush().unwrap();
    drop(store);
    // When scanning every file under the directory
    let mut files = 0;
    let mut key_marker_seen = false;
    let mut stack = vec![dir.clone()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            files += 1;
            key_marker_seen |= bytes.windows(key_marker.len()).any(|w| w == key_marker);
            // Then the marker appears nowhere
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker),
                "plaintext found in {}",
                path.display()
            );
        }
    }
    assert!(files > 0);
    assert!(key_marker_seen, "the scan did not see the stored keys");
    // And the values are really there (sled releases its file lock from a
    // background thread after the handle is dropped: retry for a moment)
    let store = (0..100)
        .find_map(|_| match Store::open(&dir, &pass("pw")) {
            Ok(s) => Some(s),
            Err(StoreError::Io(_)) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
                None
            }
            Err(e) => panic!("{e}"),
        })
        .expect("the store reopens once the first handle is gone");
    assert_eq!(
        store
            .get(RecordKind::Presignature, &[5, 3])
            .unwrap()
            .unwrap()
            .expose(),
        &value[..]
    );
}

#[test]
fn take__should_remove_the_value_durably() {
    // Given a presignature
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::create_for_tests(&dir, &pass("pw")).unwrap();
    store
        .put(RecordKind::Presignature, b"p1", b"presig 1")
        .unwrap();
    store
        .put(RecordKind::Presignature, b"p2", b"presig 2")
        .unwrap();
    store.flush().unwrap();
    // When taking it
    let taken = store
        .take(RecordKind::Presignature, b"p1")
        .unwrap()
        .unwrap();
    // Then it is returned once and gone
    assert_eq!(taken.expose(), b"presig 1");
    assert!(store
        .take(RecordKind::Presignature, b"p1")
        .unwrap()
        .is_none());
    assert!(!store.contains(RecordKind::Presignature, b"p1").unwrap());
    // And it stays gone after reopening (take flushed; no explicit flush here)
    drop(store);
    let store = Store::open(&dir, &pass("pw")).unwrap();
    assert!(store
        .get(RecordKind::Presignature, b"p1")
        .unwrap()
        .is_none());
    assert_eq!(
        store.keys(RecordKind::Presignature).unwrap(),
        vec![b"p2".to_vec()]
    );
}

#[test]
fn take__should_hand_each_value_to_one_thread_only() {
    let (_tmp, store) = new_store();
    for i in 0..50u8 {
        store.put(RecordKind::Presignature, &[i], &[i]).unwrap();
    }
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..50u8 {
                    if let Some(v) = store.take(RecordKind::Presignature, &[i]).unwrap() {
                        got.push(v.expose()[0]);
                    }
                }
                got
            })
        })
        .collect();
    let mut all: Vec<u8> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..50u8).collect::<Vec<_>>());
}

#[test]
fn insert_new__should_insert_only_once() {
    let (_tmp, store) = new_store();
    assert!(store
        .insert_new(RecordKind::SeenExecution, b"exec-1", b"first")
        .unwrap());
    assert!(!store
        .insert_new(RecordKind::SeenExecution, b"exec-1", b"second")
        .unwrap());
    assert_eq!(
        store
            .get(RecordKind::SeenExecution, b"exec-1")
            .unwrap()
            .unwrap()
            .expose(),
        b"first"
    );
    // Same key in another kind is independent
    assert!(store
        .insert_new(RecordKind::KeyInfo, b"exec-1", b"x")
        .unwrap());
}

#[test]
fn keys__should_list_in_byte_order_per_kind() {
    let (_tmp, store) = new_store();
    assert!(store.first_key(RecordKind::Primes).unwrap().is_none());
    assert_eq!(store.len(RecordKind::Primes).unwrap(), 0);
    for k in [&b"b"[..], b"a", b"c"] {
        store.put(RecordKind::Primes, k, b"v").unwrap();
    }
    store.put(RecordKind::AuxInfo, b"0", b"v").unwrap();
    assert_eq!(
        store.keys(RecordKind::Primes).unwrap(),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        store.first_key(RecordKind::Primes).unwrap(),
        Some(b"a".to_vec())
    );
    assert_eq!(store.len(RecordKind::Primes).unwrap(), 3);
    assert_eq!(store.len(RecordKind::AuxInfo).unwrap(), 1);
    assert!(store.contains(RecordKind::Primes, b"a").unwrap());
    assert!(!store.contains(RecordKind::Primes, b"0").unwrap());
}

#[test]
fn consume__should_hand_out_a_value_once_and_log_it_durably() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::create_for_tests(&dir, &pass("pw")).unwrap();
    store
        .put(RecordKind::Presignature, b"k\0p1", b"secret")
        .unwrap();
    store
        .put(RecordKind::Presignature, b"k\0p2", b"other")
        .unwrap();
    let log = (
        RecordKind::PresignatureUsed,
        b"p1".as_slice(),
        b"used for d".as_slice(),
    );
    let also = [(
        RecordKind::SeenExecution,
        b"signed/x".as_slice(),
        b"1".as_slice(),
    )];

    // When it is consumed twice
    let first = store
        .consume((RecordKind::Presignature, b"k\0p1"), log, &also)
        .unwrap();
    let second = store
        .consume((RecordKind::Presignature, b"k\0p1"), log, &also)
        .unwrap();

    // Then only the first gets it, with the log and extra record written
    assert_eq!(first.unwrap().expose(), b"secret");
    assert!(second.is_none());
    assert!(store
        .contains(RecordKind::SeenExecution, b"signed/x")
        .unwrap());
    assert_eq!(
        store
            .keys_with_prefix(RecordKind::Presignature, b"k\0")
            .unwrap(),
        vec![b"k\0p2".to_vec()]
    );
    // An existing log entry refuses the consumption and changes nothing
    let reuse = store
        .consume((RecordKind::Presignature, b"k\0p2"), log, &[])
        .unwrap();
    assert!(reuse.is_none());
    assert!(store.contains(RecordKind::Presignature, b"k\0p2").unwrap());
    drop(store);

    // And after reopening, the consumed value stays gone
    let store = Store::open(&dir, &pass("pw")).unwrap();
    assert!(!store.contains(RecordKind::Presignature, b"k\0p1").unwrap());
    assert_eq!(
        store
            .get(RecordKind::PresignatureUsed, b"p1")
            .unwrap()
            .unwrap()
            .expose(),
        b"used for d"
    );
}

#[test]
fn put_all__should_store_every_record() {
    // Given one record present
    let (_tmp, store) = new_store();
    store.put(RecordKind::Spend, b"a", b"first").unwrap();
    // When two records are put, one of them under the same key
    store
        .put_all(
            RecordKind::Spend,
            &[
                (b"a".to_vec(), b"second".to_vec()),
                (b"b".to_vec(), b"new".to_vec()),
            ],
        )
        .unwrap();
    // Then both are stored, sealed under their own keys
    let get = |k: &[u8]| store.get(RecordKind::Spend, k).unwrap().unwrap();
    assert_eq!(get(b"a").expose(), b"second");
    assert_eq!(get(b"b").expose(), b"new");
}

#[test]
fn record_kind__should_have_distinct_stable_tags() {
    let tags: Vec<_> = RecordKind::ALL.iter().map(|k| k.tag()).collect();
    assert_eq!(
        tags,
        [
            "primes",
            "aux_info",
            "key_share",
            "key_info",
            "seen_execution",
            "presignature",
            "presignature_used",
            "node_secret",
            "transcript",
            "spend",
            "audit"
        ]
    );
    let mut names: Vec<_> = RecordKind::ALL.iter().map(|k| k.tree_name()).collect();
    names.push(META_TREE);
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), RecordKind::ALL.len() + 1);
    assert!(tags.iter().all(|t| !t.as_bytes().contains(&0)));
}

#[test]
fn debug__should_print_only_the_directory() {
    let (_tmp, store) = new_store();
    let s = format!("{store:?}");
    assert_eq!(s, format!("Store {{ dir: {:?}, .. }}", store.dir()));
}

#[test]
fn keys_at_ends__should_list_both_ends_of_a_prefix_in_order() {
    // Given ten keys under one prefix and one under another
    let (_dir, store) = new_store();
    for i in 0u8..10 {
        store
            .put(RecordKind::Presignature, &[b'k', 0, i], b"v")
            .unwrap();
    }
    store.put(RecordKind::Presignature, b"l\0x", b"v").unwrap();
    let key = |i: u8| vec![b'k', 0, i];
    // When three are asked from each end
    let ends = store
        .keys_at_ends(RecordKind::Presignature, b"k\0", 3)
        .unwrap();
    // Then the first three and the last three come, in order
    let want: Vec<Vec<u8>> = [0, 1, 2, 7, 8, 9].into_iter().map(key).collect();
    assert_eq!(ends, want);
    // And a short run is listed once, whole
    let all = store
        .keys_at_ends(RecordKind::Presignature, b"k\0", 6)
        .unwrap();
    assert_eq!(all, (0..10).map(key).collect::<Vec<_>>());
}

#[test]
fn consume_unflushed__should_hand_out_a_value_once_and_keep_its_removal_after_a_flush() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::create_for_tests(&dir, &pass("pw")).unwrap();
    store
        .put(RecordKind::Presignature, b"k\0p1", b"secret")
        .unwrap();
    store.flush().unwrap();
    let log = (
        RecordKind::PresignatureUsed,
        b"p1".as_slice(),
        b"used for d".as_slice(),
    );

    // When it is consumed twice without a flush, then the store flushed
    let first = store
        .consume_unflushed((RecordKind::Presignature, b"k\0p1"), log, &[])
        .unwrap();
    let second = store
        .consume_unflushed((RecordKind::Presignature, b"k\0p1"), log, &[])
        .unwrap();
    store.flush().unwrap();
    drop(store);

    // Then only the first gets it, and after reopening it stays gone
    assert_eq!(first.unwrap().expose(), b"secret");
    assert!(second.is_none());
    let store = Store::open(&dir, &pass("pw")).unwrap();
    assert!(!store.contains(RecordKind::Presignature, b"k\0p1").unwrap());
    assert!(store.contains(RecordKind::PresignatureUsed, b"p1").unwrap());
}
