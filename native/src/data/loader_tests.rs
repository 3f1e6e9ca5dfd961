//! The loader's promises: views keyed by (seed, epoch, sample) whatever the
//! workers, replicas or interruptions; bad files skipped, counted or fatal;
//! the in-memory mode invisible in the output; bounded read-ahead; the next
//! epoch made ahead.
use super::loader::{Batch, Loader, LoaderConfig};
use super::source::InMemory;
use super::testing::{gradient, temp_dir};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Three classes of images of varied sizes (so crops fall back or not) plus
/// a test split.
fn data_set(name: &str, per_class: usize) -> PathBuf {
    let root = temp_dir(name);
    for split in ["train", "test"] {
        for (c, class) in ["cat", "dog", "emu"].iter().enumerate() {
            let dir = root.join(split).join(class);
            fs::create_dir_all(&dir).expect("mkdir");
            for i in 0..per_class {
                let (w, h) = (24 + 5 * i as u32 + c as u32, 40 - 3 * i as u32 % 17);
                let ext = ["png", "jpg", "bmp"][(i + c) % 3];
                gradient(w, h).save(dir.join(format!("{i:03}.{ext}"))).expect("save");
            }
        }
    }
    root
}

fn config(root: &Path, split: &str, batch: usize) -> LoaderConfig {
    let augment = split == "train";
    serde_json::from_value(serde_json::json!({
        "dataDir": root, "split": split, "batchSize": batch, "imageSize": 16, "seed": 9,
        "augment": augment, "shuffle": augment, "dropLast": augment, "inMemory": "never",
        "colorJitterStrength": 1.0, "blurProb": [0.5, 0.5], "solarizeProb": [0.0, 0.0],
    }))
    .expect("config")
}

/// Everything a sample contributes to a batch, by global position.
type Sample = (Vec<Vec<u8>>, Vec<Vec<f32>>, i64);

fn samples_of(batch: &Batch, into: &mut BTreeMap<u64, Sample>) {
    let plane = 3 * (batch.size as usize).pow(2);
    for (i, &pos) in batch.positions.iter().enumerate() {
        let views = (0..batch.host.views()).map(|v| batch.host.view(v, batch.n)[i * plane..(i + 1) * plane].to_vec()).collect();
        let np = crate::augment::NPARAMS;
        let params = batch.params.iter().filter(|p| !p.is_empty()).map(|p| p[i * np..(i + 1) * np].to_vec()).collect();
        assert!(into.insert(pos, (views, params, batch.labels[i])).is_none(), "position {pos} twice");
    }
}

/// All samples of one epoch, with the batch sizes seen.
fn epoch(loader: &mut Loader, e: u64) -> (BTreeMap<u64, Sample>, Vec<usize>) {
    let (mut all, mut sizes) = (BTreeMap::new(), Vec::new());
    loader.start_epoch(e, 0).expect("start");
    while let Some(b) = loader.next().expect("batch") {
        sizes.push(b.n);
        samples_of(&b, &mut all);
    }
    (all, sizes)
}

#[test]
fn views_do_not_depend_on_the_number_of_workers() {
    let root = data_set("workers", 7);
    let run = |workers: usize| {
        let mut l = Loader::new(LoaderConfig { workers, ..config(&root, "train", 4) }).expect("loader");
        epoch(&mut l, 3)
    };
    let (one, sizes) = run(1);
    assert_eq!(sizes, vec![4; 5]); // 21 images, drop_last
    assert_eq!(one.keys().copied().collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
    assert!(one.values().all(|(v, p, _)| v.len() == 2 && v[0] != v[1] && p[0] != p[1]), "two different views");
    for workers in [2, 4] {
        assert!(run(workers).0 == one, "{workers} workers differ from 1");
    }
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn a_global_batch_is_the_same_on_one_or_two_replicas() {
    let root = data_set("replicas", 7);
    let mut single = Loader::new(config(&root, "train", 8)).expect("loader");
    let (whole, _) = epoch(&mut single, 1);
    let mut halves = BTreeMap::new();
    for rank in 0..2 {
        let cfg = LoaderConfig { rank, world_size: 2, workers: 2, ..config(&root, "train", 4) };
        let (part, sizes) = epoch(&mut Loader::new(cfg).expect("loader"), 1);
        assert_eq!(sizes, vec![4, 4]); // 21 images padded to 22, 11 per replica, drop_last
        // Replica r's batch b holds the positions of global batch b.
        assert!(part.keys().all(|p| p % 2 == rank as u64 && p / 8 < 2));
        halves.extend(part);
    }
    assert!(halves == whole);
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn a_resumed_run_sees_the_views_of_an_uninterrupted_one() {
    let root = data_set("resume", 5);
    let mut long = Loader::new(config(&root, "train", 3)).expect("loader");
    let epochs: Vec<_> = (0..3).map(|e| epoch(&mut long, e).0).collect();
    assert!(epochs[0] != epochs[1], "views change between epochs");
    let mut resumed = Loader::new(LoaderConfig { workers: 3, ..config(&root, "train", 3) }).expect("loader");
    assert!(epoch(&mut resumed, 2).0 == epochs[2]);
    // Stopping in the middle of an epoch and starting it again gives the same epoch.
    resumed.start_epoch(1, 0).expect("start");
    resumed.next().expect("batch");
    assert!(epoch(&mut resumed, 1).0 == epochs[1]);
    // Resuming at batch 2 of epoch 1 gives the rest of that epoch: positions 6.. (batches of 3).
    resumed.start_epoch(1, 2).expect("start");
    let mut rest = BTreeMap::new();
    while let Some(b) = resumed.next().expect("batch") {
        samples_of(&b, &mut rest);
    }
    let want: BTreeMap<u64, Sample> = epochs[1].iter().filter(|(&p, _)| p >= 6).map(|(&p, s)| (p, s.clone())).collect();
    assert!(!rest.is_empty() && rest == want);
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn keeping_images_in_memory_changes_nothing_but_the_reads() {
    let root = data_set("memory", 4);
    let mut disk = Loader::new(config(&root, "train", 4)).expect("loader");
    let from_disk = [epoch(&mut disk, 0).0, epoch(&mut disk, 1).0];
    let mut ram = Loader::new(LoaderConfig { in_memory: InMemory::Always, workers: 2, ..config(&root, "train", 4) })
        .expect("loader");
    assert!(ram.report().in_memory && !disk.report().in_memory);
    assert!(epoch(&mut ram, 0).0 == from_disk[0]);
    assert_eq!(ram.report().cached_images, 12);
    fs::remove_dir_all(root.join("train")).expect("rm"); // from now on only memory can serve
    assert!(epoch(&mut ram, 1).0 == from_disk[1]);
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn test_batches_resize_every_image_once() {
    let root = data_set("test_split", 5);
    let mut l = Loader::new(LoaderConfig { workers: 2, ..config(&root, "test", 4) }).expect("loader");
    let (all, sizes) = epoch(&mut l, 0);
    assert_eq!(sizes, vec![4, 4, 4, 3]); // no drop_last: every test image counts
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), (0..15).collect::<Vec<_>>());
    assert!(all.values().all(|(v, p, _)| v.len() == 1 && p.is_empty()));
    let labels: Vec<i64> = all.values().map(|s| s.2).collect();
    assert_eq!(labels, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]); // in order, unshuffled
    let mut seen = BTreeMap::new();
    for rank in 0..2 {
        let cfg = LoaderConfig { rank, world_size: 2, ..config(&root, "test", 4) };
        seen.extend(epoch(&mut Loader::new(cfg).expect("loader"), 0).0);
    }
    assert!(seen == all, "two replicas evaluate disjoint shards covering the test set once");
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn unreadable_training_images_are_replaced_counted_and_reported() {
    let root = data_set("bad_train", 4);
    let bytes = fs::read(root.join("train/dog/000.jpg")).expect("read");
    fs::write(root.join("train/dog/000.jpg"), &bytes[..bytes.len() / 2]).expect("truncate");
    fs::write(root.join("train/emu/001.png"), b"").expect("zero bytes");
    fs::write(root.join("train/cat/003.png"), b"GIF89a nonsense").expect("corrupt");
    let mut l = Loader::new(config(&root, "train", 4)).expect("loader");
    for e in 0..2 {
        let (all, sizes) = epoch(&mut l, e);
        assert_eq!(sizes, vec![4; 3], "batches keep their size");
        assert_eq!(all.len(), 12);
        let skipped = l.report().skipped;
        assert_eq!((skipped.epoch, skipped.count, skipped.examples.len()), (e, 3, 3), "reported every epoch");
        assert!(skipped.examples.iter().any(|x| x.contains("dog/000.jpg: truncated")), "{:?}", skipped.examples);
    }
    let strict = Loader::new(LoaderConfig { strict: true, ..config(&root, "train", 4) });
    let mut strict = strict.expect("loader");
    strict.start_epoch(0, 0).expect("start");
    let err = (0..3).find_map(|_| strict.next().err()).expect("a fatal error").to_string();
    assert!(err.contains("cannot decode") && err.ends_with("(--strict makes unreadable images fatal)"), "{err}");
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn unreadable_test_images_are_left_out_and_an_unreadable_split_is_an_error() {
    let root = data_set("bad_test", 2);
    fs::write(root.join("test/cat/000.png"), b"").expect("zero bytes");
    let mut l = Loader::new(config(&root, "test", 4)).expect("loader");
    let (all, sizes) = epoch(&mut l, 0);
    assert_eq!((all.len(), sizes), (5, vec![3, 2])); // the bad image leaves a gap
    assert_eq!(l.report().skipped.count, 1);
    for f in fs::read_dir(root.join("train/emu")).expect("ls") {
        fs::write(f.expect("entry").path(), b"").expect("zero");
    }
    for class in ["cat", "dog"] {
        fs::remove_dir_all(root.join("train").join(class)).expect("rm");
    }
    let mut broken = Loader::new(config(&root, "train", 1)).expect("loader");
    broken.start_epoch(0, 0).expect("start");
    let err = broken.next().map(|_| ()).unwrap_err().to_string();
    assert!(err.starts_with("2 images in a row in ") && err.contains("are unreadable"), "{err}");
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn bad_layouts_are_one_line_errors_naming_the_path() {
    let root = data_set("layout", 2);
    let err = |cfg: LoaderConfig| Loader::new(cfg).map(|_| ()).unwrap_err().to_string();
    let msg = err(config(&root, "valid", 2));
    assert!(msg.starts_with(&format!("no folder {}: --data-dir must hold", root.join("valid").display())), "{msg}");
    let msg = err(config(&root, "train", 7));
    assert_eq!(msg, format!("{} has 6 images, fewer than one batch of 7 per replica; lower --batch-size", root.join("train").display()));
    fs::create_dir_all(root.join("train/fox")).expect("mkdir");
    assert!(err(config(&root, "train", 2)).starts_with("class folder"));
    let msg = err(LoaderConfig { color_jitter_strength: 4.0, ..config(&root, "train", 2) });
    assert!(msg.starts_with("--color-jitter-strength"), "{msg}");
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn read_ahead_is_bounded() {
    let root = data_set("bounded", 10);
    let cfg = LoaderConfig { in_memory: InMemory::Always, workers: 2, prefetch: 2, ..config(&root, "train", 2) };
    let mut l = Loader::new(cfg).expect("loader");
    l.start_epoch(0, 0).expect("start");
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Each worker holds one ready batch and one it cannot hand over: 2 × 2 × 2 images.
    assert!(l.report().cached_images <= 8, "{} images read ahead", l.report().cached_images);
    let mut n = 0;
    while l.next().expect("batch").is_some() {
        n += 1;
    }
    assert_eq!(n, 15);
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn a_training_loader_makes_the_next_epochs_first_batches_ahead() {
    let root = data_set("ahead", 4);
    let cfg = LoaderConfig { workers: 2, prefetch: 2, ..config(&root, "train", 2) };
    let mut l = Loader::new(cfg).expect("loader");
    let (_, sizes) = epoch(&mut l, 0);
    assert_eq!(sizes.len(), 6);
    // The workers go on with epoch 1 while nobody asks: one ready batch and one made each.
    std::thread::sleep(std::time::Duration::from_millis(500));
    fs::remove_dir_all(root.join("train")).expect("remove");
    l.start_epoch(1, 0).expect("start");
    for _ in 0..2 {
        let b = l.next().expect("a batch made before the files went").expect("batch");
        assert_eq!(b.n, 2);
    }
    assert_eq!(l.report().skipped.count, 0);
    let _ = fs::remove_dir_all(&root);
}

