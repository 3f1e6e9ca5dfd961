//! torchvision's `ImageFolder`: `root/<class>/**/<image>`, classes = sorted sub-folder names;
//! or a folder of unlabelled images (no sub-folders): no classes, every label 0.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

/// torchvision's IMG_EXTENSIONS, lower-case, with the dot.
pub const IMG_EXTENSIONS: [&str; 9] = [".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"];

/// A labelled image dataset laid out as `root/<class>/**/<image>`.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    /// The folder that was scanned.
    pub root: PathBuf,
    /// Class names (sub-folder names of `root`), sorted; the label is the index here.
    /// Empty for a folder of unlabelled images.
    pub classes: Vec<String>,
    /// `(image path, class index)`, grouped by class in class order.
    pub samples: Vec<(PathBuf, i64)>,
}

impl ImageFolder {
    /// torchvision.datasets.ImageFolder semantics: classes = sorted sub-folder names of `root`,
    /// samples = files with an image extension (case-insensitive) found recursively under each class folder
    /// (symlinks followed), sorted by path within a class, classes in order. One difference: a symlinked
    /// folder is followed only when it leads inside its class folder, so a link such as `loop -> ..` cannot
    /// add other classes' images to a class (torchvision would walk them, and loop forever on a cycle).
    /// A folder without sub-folders holds unlabelled images (see [`ImageFolder::unlabelled`]).
    pub fn scan(root: &Path) -> Result<ImageFolder> {
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("not a folder: {}", root.display()),
            Err(_) => bail!("no such folder: {}", root.display()),
        }
        let class_names = class_dirs(root)?;
        if class_names.is_empty() {
            return Self::unlabelled(root);
        }
        let mut samples = Vec::new();
        for (index, name) in class_names.iter().enumerate() {
            let dir = root.join(name);
            let files = images_under(&dir)?;
            if files.is_empty() {
                bail!(
                    "class folder {} has no images (looked for {}; a folder of unlabelled images has no sub-folders)",
                    dir.display(),
                    IMG_EXTENSIONS.join(" ")
                );
            }
            samples.extend(files.into_iter().map(|p| (p, index as i64)));
        }
        let classes = class_names.iter().map(|n| n.to_string_lossy().into_owned()).collect();
        Ok(ImageFolder { root: root.to_path_buf(), classes, samples })
    }

    /// The images directly in `root`, sorted by name, without classes: self-supervised
    /// training needs no labels. Every sample gets label 0.
    pub fn unlabelled(root: &Path) -> Result<ImageFolder> {
        let mut names: Vec<OsString> =
            entries(root)?.iter().map(|e| e.file_name()).filter(|n| has_image_extension(n)).collect();
        if names.is_empty() {
            bail!("no images in {} (looked for {}, or one sub-folder of images per class)", root.display(), IMG_EXTENSIONS.join(" "));
        }
        names.sort();
        let samples = names.into_iter().map(|n| (root.join(n), 0)).collect();
        Ok(ImageFolder { root: root.to_path_buf(), classes: Vec::new(), samples })
    }

    /// Width and height of a typical image: the median of the sides read
    /// from the headers of up to `probes` evenly spaced files (unreadable
    /// ones are left out); None when none can be read.
    pub fn typical_size(&self, probes: usize) -> Option<(u32, u32)> {
        let n = self.samples.len();
        let step = n.div_ceil(probes.max(1)).max(1);
        let (mut ws, mut hs): (Vec<u32>, Vec<u32>) = (0..n)
            .step_by(step)
            .filter_map(|i| image::ImageReader::open(&self.samples[i].0).ok()?.with_guessed_format().ok()?.into_dimensions().ok())
            .unzip();
        if ws.is_empty() {
            return None;
        }
        ws.sort_unstable();
        hs.sort_unstable();
        Some((ws[ws.len() / 2], hs[hs.len() / 2]))
    }
}

/// Like torchvision's find_classes: every entry that is a directory after following symlinks,
/// hidden ones included, sorted by name (byte order, which equals Python's code-point order for UTF-8).
fn class_dirs(root: &Path) -> Result<Vec<OsString>> {
    let mut names: Vec<OsString> =
        entries(root)?.iter().filter(|e| is_dir_following_links(e)).map(|e| e.file_name()).collect();
    names.sort();
    Ok(names)
}

/// All entries of `dir`, with I/O errors turned into one-line messages naming the folder.
fn entries(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let fail = |e: std::io::Error| anyhow!("cannot list {}: {e}", dir.display());
    fs::read_dir(dir).map_err(fail)?.map(|e| e.map_err(fail)).collect()
}

/// `DirEntry::file_type` does not follow symlinks, so only symlinks need the extra stat;
/// a dangling symlink counts as a file, as in `os.scandir(...).is_dir()`.
fn is_dir_following_links(entry: &fs::DirEntry) -> bool {
    match entry.file_type() {
        Ok(t) if t.is_symlink() => fs::metadata(entry.path()).map(|m| m.is_dir()).unwrap_or(false),
        Ok(t) => t.is_dir(),
        Err(_) => false,
    }
}

/// True when the name ends with one of IMG_EXTENSIONS, ignoring case (torchvision lower-cases the path).
fn has_image_extension(name: &OsStr) -> bool {
    let lower = name.to_string_lossy().to_lowercase();
    IMG_EXTENSIONS.iter().any(|ext| lower.ends_with(ext))
}

/// Image files under `dir`, in the order torchvision produces: `sorted(os.walk(dir, followlinks=True))`
/// sorts by the directory path *string*, then file names are sorted within each directory.
/// (Comparing whole paths instead would differ, e.g. for `b-c/` vs `b/`.)
fn images_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<(PathBuf, OsString)> = Vec::new();
    let class_root = fs::canonicalize(dir).map_err(|e| anyhow!("cannot resolve {}: {e}", dir.display()))?;
    walk(dir, &class_root, &mut Vec::new(), &mut found)?;
    found.sort_by(|a, b| (a.0.as_os_str(), &a.1).cmp(&(b.0.as_os_str(), &b.1)));
    Ok(found.into_iter().map(|(parent, name)| parent.join(name)).collect())
}

/// Depth-first walk following directory symlinks that stay inside `class_root` (canonical).
/// `ancestors` holds canonical paths of the directories being walked so a symlink cycle is
/// skipped instead of recursing forever.
fn walk(dir: &Path, class_root: &Path, ancestors: &mut Vec<PathBuf>, found: &mut Vec<(PathBuf, OsString)>) -> Result<()> {
    let canonical = fs::canonicalize(dir).map_err(|e| anyhow!("cannot resolve {}: {e}", dir.display()))?;
    if !canonical.starts_with(class_root) || ancestors.contains(&canonical) {
        return Ok(());
    }
    ancestors.push(canonical);
    for entry in entries(dir)? {
        if is_dir_following_links(&entry) {
            walk(&entry.path(), class_root, ancestors, found)?;
        } else if has_image_extension(&entry.file_name()) {
            found.push((dir.to_path_buf(), entry.file_name()));
        }
    }
    ancestors.pop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testing::temp_dir;

    #[test]
    fn scan_follows_torchvision_layout() {
        let root = temp_dir("scan");
        for d in ["b", "a/sub", "a/sub-x", "c.d", "a/sub/deeper"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        let files = ["a/z.PNG", "a/sub/y.jpg", "a/sub-x/w.webp", "a/sub/deeper/x.bmp", "a/note.txt", "b/1.jpeg",
            "b/2.tiff", "c.d/ok.ppm", "c.d/no.gif", "top.jpg"];
        for f in files {
            fs::write(root.join(f), b"x").expect("write");
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("b/1.jpeg"), root.join("c.d/link.jpg")).expect("symlink");
        let ds = ImageFolder::scan(&root).expect("scan");
        assert_eq!(ds.classes, ["a", "b", "c.d"]);
        let got: Vec<_> = ds.samples.iter().map(|(p, c)| (p.strip_prefix(&root).expect("in root").to_path_buf(), *c)).collect();
        // Order checked against torchvision.datasets.folder.make_dataset on the same tree.
        let mut want = vec![("a/z.PNG", 0), ("a/sub/y.jpg", 0), ("a/sub-x/w.webp", 0), ("a/sub/deeper/x.bmp", 0),
            ("b/1.jpeg", 1), ("b/2.tiff", 1), ("c.d/link.jpg", 2), ("c.d/ok.ppm", 2)];
        want.retain(|(p, _)| cfg!(unix) || !p.contains("link"));
        assert_eq!(got, want.iter().map(|(p, c)| (PathBuf::from(p), *c)).collect::<Vec<_>>());
        let _ = fs::remove_dir_all(&root);
    }

    /// A folder symlink out of a class folder (`loop -> ..`) must not pull other classes' images in;
    /// one that stays inside is followed, as torchvision does.
    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_a_class_folder_are_not_followed() {
        let root = temp_dir("scan_links");
        for d in ["a/inner", "b", "elsewhere"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        for f in ["a/1.png", "a/inner/2.png", "b/3.png", "b/4.png", "elsewhere/5.png"] {
            fs::write(root.join(f), b"x").expect("write");
        }
        let link = |to: &str, at: &str| std::os::unix::fs::symlink(to, root.join(at)).expect("symlink");
        link("..", "a/loop");
        link("../../b", "a/inner/up");
        link(&root.join("elsewhere").to_string_lossy(), "b/away");
        link("inner", "a/same");
        let ds = ImageFolder::scan(&root).expect("scan");
        assert_eq!(ds.classes, ["a", "b", "elsewhere"]);
        let of = |c: i64| -> Vec<String> {
            ds.samples.iter().filter(|s| s.1 == c).map(|(p, _)| p.strip_prefix(&root).expect("in root").display().to_string()).collect()
        };
        assert_eq!(of(0), ["a/1.png", "a/inner/2.png", "a/same/2.png"]);
        assert_eq!(of(1), ["b/3.png", "b/4.png"]);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn scan_errors_name_the_problem() {
        let root = temp_dir("scan_err");
        let err = |p: &Path| ImageFolder::scan(p).map(|_| ()).unwrap_err().to_string();
        assert_eq!(err(&root.join("nope")), format!("no such folder: {}", root.join("nope").display()));
        assert!(err(&root).starts_with(&format!("no images in {}", root.display())));
        fs::create_dir_all(root.join("empty")).expect("mkdir");
        fs::write(root.join("empty/readme.txt"), b"x").expect("write");
        assert!(err(&root).starts_with(&format!("class folder {} has no images", root.join("empty").display())));
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn a_folder_without_sub_folders_is_unlabelled() {
        let root = temp_dir("scan_flat");
        for (name, (w, h)) in [("b.png", (32, 30)), ("a.PNG", (32, 30)), ("c.jpg", (64, 8)), ("notes.txt", (0, 0))] {
            if w == 0 {
                fs::write(root.join(name), b"x").expect("write");
            } else {
                crate::data::testing::gradient(w, h).save(root.join(name)).expect("save");
            }
        }
        let ds = ImageFolder::scan(&root).expect("scan");
        assert!(ds.classes.is_empty());
        let got: Vec<_> = ds.samples.iter().map(|(p, c)| (p.file_name().expect("name").to_owned(), *c)).collect();
        assert_eq!(got, [("a.PNG", 0), ("b.png", 0), ("c.jpg", 0)].map(|(n, c)| (OsString::from(n), c)));
        assert_eq!(ds.typical_size(64), Some((32, 30)));
        let _ = fs::remove_dir_all(&root);
    }
}
