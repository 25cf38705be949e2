//! Container images built on this machine, with no registry, no base image
//! and no daemon: the test bed's real node runs the project's own images.
//!
//! `images/*.Containerfile` (`make images`) build the images users pull,
//! from `rust:`/`golang:` build stages and distroless bases. Those bases
//! cannot be pulled here, so this module assembles images with the same
//! contract — entrypoint, user, paths, exposed ports — from what is on the
//! host: the binaries `cargo`/`go` built, exactly the shared libraries `ldd`
//! names for them (plus the dynamic loader), the host's CA bundle, and an
//! `/etc/passwd` for the user. Like `ko` or `crane append`, an image is one
//! layer written straight into an OCI image-layout archive that `ctr images
//! import` loads; nothing is copied through a storage driver.
//!
//! Why not buildah (which works here, `FROM scratch` with vfs storage): the
//! archive written here is deterministic (fixed mtimes and owners, sorted
//! entries), so its digest is a function of the inputs; it needs no image
//! store to clean up, no extra package, and one copy of each file instead of
//! three (rootfs, vfs layer, pushed archive).
//!
//! Archives are cached in `$FERROTEL_CACHE/images/`, keyed by a hash of the
//! image spec and of every input file's content: a warm run rebuilds
//! nothing, a changed probe binary gives a new tag (so DaemonSets roll).
//!
//! How these images differ from the registry ones: glibc and friends come
//! from this Debian host rather than from distroless (same Debian release),
//! the Rust binaries are the workspace's debug builds, and there is no
//! `/usr/share/zoneinfo` (nothing here needs it).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{Error, Result, io_err};

/// Registry host of every locally built image. Not resolvable, so a missing
/// image fails (`ErrImageNeverPull` / `ErrImagePull`) instead of pulling
/// something else.
pub const LOCAL_REGISTRY: &str = "ferrotel.local";

/// Bumped when the archive layout written here changes, to invalidate caches.
const FORMAT_VERSION: &str = "ferrotel-local-image-v1";

fn err(message: impl Into<String>) -> Error {
    Error::Image(message.into())
}

/// One entry of the image's single layer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Entry {
    /// A file with content from `source` on the host.
    File {
        source: PathBuf,
        mode: u32,
    },
    /// A file with the given content.
    Content {
        content: Vec<u8>,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: String,
    },
}

/// What an image contains and how it runs.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    name: String,
    entries: BTreeMap<String, Entry>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    user: String,
    ports: Vec<u16>,
    env: Vec<String>,
    workdir: String,
    /// (name, uid) written to /etc/passwd and /etc/group.
    users: Vec<(String, u32)>,
}

impl ImageSpec {
    /// An empty image `name` (e.g. `ferrotel-probe`) running as `user`
    /// (`uid:gid`).
    pub fn new(name: &str, user: &str) -> Self {
        let mut spec = ImageSpec {
            name: name.to_owned(),
            entries: BTreeMap::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            user: user.to_owned(),
            ports: Vec::new(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            workdir: "/".into(),
            users: vec![("root".into(), 0), ("nonroot".into(), 65532)],
        };
        // Like distroless: a writable-by-all /tmp for programs that need
        // scratch space (read-only root filesystems mount over it or not).
        spec.entries
            .insert("tmp".into(), Entry::Dir { mode: 0o1777 });
        spec
    }

    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    pub fn ports(mut self, ports: &[u16]) -> Self {
        self.ports = ports.to_vec();
        self
    }

    pub fn env(mut self, var: &str) -> Self {
        self.env.push(var.to_owned());
        self
    }

    /// Adds a user (and its group, same id) to /etc/passwd and /etc/group.
    pub fn user_entry(mut self, name: &str, uid: u32) -> Self {
        self.users.push((name.to_owned(), uid));
        self
    }

    /// The file `source` at `path` (absolute, in the image), executable.
    pub fn file(mut self, source: &Path, path: &str, mode: u32) -> Self {
        self.entries.insert(
            clean(path),
            Entry::File {
                source: source.to_path_buf(),
                mode,
            },
        );
        self
    }

    /// A file with `content` at `path`.
    pub fn content(mut self, path: &str, content: &[u8], mode: u32) -> Self {
        self.entries.insert(
            clean(path),
            Entry::Content {
                content: content.to_vec(),
                mode,
            },
        );
        self
    }

    /// An executable at `path` plus every shared library `ldd` names for it
    /// (at the paths it names) and the dynamic loader.
    pub fn binary(self, source: &Path, path: &str) -> Result<Self> {
        let libs = shared_libraries(source)?;
        let mut spec = self.file(source, path, 0o755);
        for lib in libs {
            spec = spec.file(&lib, &lib.display().to_string(), 0o755);
        }
        Ok(spec)
    }

    /// The host's CA bundle at the Debian path (which Go, rustls-native-certs
    /// and OpenSSL all look at).
    pub fn ca_certificates(self) -> Self {
        self.file(
            Path::new("/etc/ssl/certs/ca-certificates.crt"),
            "/etc/ssl/certs/ca-certificates.crt",
            0o644,
        )
    }

    /// Every regular file and symlink under `source`, at `path`, skipping
    /// directories named in `skip` (e.g. `__pycache__`). Shared objects
    /// found get their `ldd` libraries too.
    pub fn tree(mut self, source: &Path, path: &str, skip: &[&str]) -> Result<Self> {
        let mut stack = vec![(source.to_path_buf(), clean(path))];
        while let Some((dir, at)) = stack.pop() {
            self.entries.insert(at.clone(), Entry::Dir { mode: 0o755 });
            let mut children: Vec<_> = std::fs::read_dir(&dir)
                .map_err(io_err(&dir))?
                .filter_map(|e| e.ok())
                .collect();
            children.sort_by_key(|e| e.file_name());
            for child in children {
                let name = child.file_name().to_string_lossy().into_owned();
                let host = child.path();
                let inside = format!("{at}/{name}");
                let meta = std::fs::symlink_metadata(&host).map_err(io_err(&host))?;
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&host).map_err(io_err(&host))?;
                    self.entries.insert(
                        inside,
                        Entry::Symlink {
                            target: target.display().to_string(),
                        },
                    );
                } else if meta.is_dir() {
                    if !skip.contains(&name.as_str()) {
                        stack.push((host, inside));
                    }
                } else if meta.is_file() {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = meta.permissions().mode() & 0o7777;
                    // Extension modules bring their libraries; one whose
                    // library is not installed here (say, tkinter's) is left
                    // as it is: it fails only if imported, as on the host.
                    if name.contains(".so") {
                        for lib in shared_libraries(&host).unwrap_or_default() {
                            let at = lib.display().to_string();
                            self.entries.entry(clean(&at)).or_insert(Entry::File {
                                source: lib,
                                mode: 0o755,
                            });
                        }
                    }
                    self.entries
                        .insert(inside, Entry::File { source: host, mode });
                }
            }
        }
        Ok(self)
    }

    /// The image name (`ferrotel.local/<name>`) without a tag.
    pub fn repository(&self) -> String {
        format!("{LOCAL_REGISTRY}/{}", self.name)
    }

    /// Builds (or finds in `cache_dir`) the archive of this image.
    pub fn build(mut self, cache_dir: &Path) -> Result<LocalImage> {
        self.add_accounts();
        let key = self.cache_key()?;
        let tag = key[..16].to_owned();
        let reference = format!("{}:{tag}", self.repository());
        let archive = cache_dir.join(format!("{}-{tag}.oci.tar", self.name));
        if archive.is_file() {
            return Ok(LocalImage {
                name: self.name,
                reference,
                archive,
            });
        }
        std::fs::create_dir_all(cache_dir).map_err(io_err(cache_dir))?;
        let tmp = cache_dir.join(format!(".{}-{tag}.{}.tmp", self.name, std::process::id()));
        let written = self.write_archive(&tmp, &reference, &tag);
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // Atomic: a concurrent build of the same inputs writes the same bytes.
        std::fs::rename(&tmp, &archive).map_err(io_err(&archive))?;
        tracing::info!(image = %reference, archive = %archive.display(), "Built local image");
        Ok(LocalImage {
            name: self.name,
            reference,
            archive,
        })
    }

    fn add_accounts(&mut self) {
        let mut passwd = String::new();
        let mut group = String::new();
        let mut users = self.users.clone();
        users.sort_by_key(|(_, uid)| *uid);
        users.dedup_by_key(|(_, uid)| *uid);
        for (name, uid) in &users {
            let home = if *uid == 0 {
                "/root".to_owned()
            } else {
                format!("/home/{name}")
            };
            passwd.push_str(&format!(
                "{name}:x:{uid}:{uid}:{name}:{home}:/sbin/nologin\n"
            ));
            group.push_str(&format!("{name}:x:{uid}:\n"));
            self.entries.insert(
                clean(&home),
                Entry::Dir {
                    mode: if *uid == 0 { 0o700 } else { 0o755 },
                },
            );
        }
        self.entries.insert(
            "etc/passwd".into(),
            Entry::Content {
                content: passwd.into_bytes(),
                mode: 0o644,
            },
        );
        self.entries.insert(
            "etc/group".into(),
            Entry::Content {
                content: group.into_bytes(),
                mode: 0o644,
            },
        );
    }

    fn config_json(&self) -> serde_json::Value {
        let ports: serde_json::Map<String, serde_json::Value> = self
            .ports
            .iter()
            .map(|p| (format!("{p}/tcp"), json!({})))
            .collect();
        json!({
            "Entrypoint": self.entrypoint,
            "Cmd": if self.cmd.is_empty() { serde_json::Value::Null } else { json!(self.cmd) },
            "User": self.user,
            "ExposedPorts": ports,
            "Env": self.env,
            "WorkingDir": self.workdir,
            "Labels": {"org.opencontainers.image.source": "ferrotel local build (e2e/src/images.rs)"},
        })
    }

    /// Hash of the format, the config and every entry (file contents
    /// included).
    fn cache_key(&self) -> Result<String> {
        let mut hasher = Sha256::new();
        hasher.update(FORMAT_VERSION.as_bytes());
        hasher.update(self.name.as_bytes());
        hasher.update(self.config_json().to_string().as_bytes());
        for (path, entry) in &self.entries {
            hasher.update(path.as_bytes());
            match entry {
                Entry::File { source, mode } => {
                    hasher.update(mode.to_le_bytes());
                    let mut file = std::fs::File::open(source).map_err(io_err(source))?;
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        use std::io::Read;
                        let n = file.read(&mut buf).map_err(io_err(source))?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                    }
                }
                Entry::Content { content, mode } => {
                    hasher.update(mode.to_le_bytes());
                    hasher.update(content);
                }
                Entry::Dir { mode } => hasher.update(mode.to_le_bytes()),
                Entry::Symlink { target } => hasher.update(target.as_bytes()),
            }
            hasher.update([0]);
        }
        Ok(hex(&hasher.finalize()))
    }

    fn layer(&self) -> Result<Vec<u8>> {
        // Parent directories of every entry exist in the layer, in order.
        let mut all: BTreeMap<String, Entry> = BTreeMap::new();
        for (path, entry) in &self.entries {
            let mut parent = Path::new(path).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                all.entry(dir.display().to_string())
                    .or_insert(Entry::Dir { mode: 0o755 });
                parent = dir.parent();
            }
            all.insert(path.clone(), entry.clone());
        }
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        for (path, entry) in &all {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match entry {
                Entry::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, format!("{path}/"), std::io::empty())
                        .map_err(|e| err(format!("tar {path}: {e}")))?;
                }
                Entry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, path, target)
                        .map_err(|e| err(format!("tar {path}: {e}")))?;
                }
                Entry::File { source, mode } => {
                    let file = std::fs::File::open(source).map_err(io_err(source))?;
                    let len = file.metadata().map_err(io_err(source))?.len();
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(len);
                    builder
                        .append_data(&mut header, path, file)
                        .map_err(|e| err(format!("tar {path} from {}: {e}", source.display())))?;
                }
                Entry::Content { content, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(content.len() as u64);
                    builder
                        .append_data(&mut header, path, content.as_slice())
                        .map_err(|e| err(format!("tar {path}: {e}")))?;
                }
            }
        }
        builder
            .into_inner()
            .map_err(|e| err(format!("finishing the layer of {}: {e}", self.name)))
    }

    fn write_archive(&self, out: &Path, reference: &str, tag: &str) -> Result<()> {
        let layer = self.layer()?;
        let layer_digest = sha256(&layer);
        let config = json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": self.config_json(),
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "ferrotel e2e/src/images.rs"}],
        })
        .to_string()
        .into_bytes();
        let config_digest = sha256(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{config_digest}"),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": format!("sha256:{layer_digest}"),
                "size": layer.len(),
            }],
        })
        .to_string()
        .into_bytes();
        let manifest_digest = sha256(&manifest);
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{manifest_digest}"),
                "size": manifest.len(),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": reference,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        })
        .to_string()
        .into_bytes();

        let file = std::fs::File::create(out).map_err(io_err(out))?;
        let mut archive = tar::Builder::new(std::io::BufWriter::new(file));
        archive.mode(tar::HeaderMode::Deterministic);
        let mut add = |path: String, data: &[u8]| -> Result<()> {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            header.set_mtime(0);
            archive
                .append_data(&mut header, &path, data)
                .map_err(|e| err(format!("writing {path} into {}: {e}", out.display())))
        };
        add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add("index.json".into(), &index)?;
        add(format!("blobs/sha256/{layer_digest}"), &layer)?;
        add(format!("blobs/sha256/{config_digest}"), &config)?;
        add(format!("blobs/sha256/{manifest_digest}"), &manifest)?;
        let mut writer = archive
            .into_inner()
            .map_err(|e| err(format!("finishing {}: {e}", out.display())))?;
        writer.flush().map_err(io_err(out))
    }
}

/// A built image: its reference and the archive that `ctr images import` loads.
#[derive(Clone, Debug)]
pub struct LocalImage {
    /// Short name (`ferrotel-probe`).
    pub name: String,
    /// `ferrotel.local/<name>:<content tag>`.
    pub reference: String,
    pub archive: PathBuf,
}

impl LocalImage {
    /// The repository part of [`LocalImage::reference`].
    pub fn repository(&self) -> &str {
        self.reference
            .rsplit_once(':')
            .map_or(self.reference.as_str(), |(r, _)| r)
    }

    /// The tag part of [`LocalImage::reference`].
    pub fn tag(&self) -> &str {
        self.reference.rsplit_once(':').map_or("", |(_, t)| t)
    }
}

fn clean(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned()
}

fn sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The shared libraries `ldd` resolves for `binary`, and its dynamic
/// loader, as absolute paths (empty for a static binary).
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| Error::Spawn {
            component: "ldd".into(),
            program: "ldd".into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("statically linked") {
        // "not a dynamic executable" (exit 1): a static binary needs nothing.
        return Ok(Vec::new());
    }
    parse_ldd(&text).map_err(|line| {
        err(format!(
            "ldd {}: cannot resolve {line:?}; install the library on this host",
            binary.display()
        ))
    })
}

/// Parses `ldd` output into library paths; `Err(line)` for a library ldd
/// could not find.
fn parse_ldd(text: &str) -> std::result::Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("=> not found") {
            return Err(line.to_owned());
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        // linux-vdso.so.1 has no path: the kernel maps it.
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Where built archives are cached: `$FERROTEL_CACHE/images` (default
/// `~/.cache/ferrotel/images`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("FERROTEL_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ferrotel")))
        .unwrap_or_else(|| PathBuf::from("/tmp/ferrotel-cache"))
        .join("images")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n";
        assert_eq!(
            parse_ldd(text).expect("parses"),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libm.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn a_missing_library_is_an_error_naming_it() {
        let text = "\tlibfoo.so.1 => not found\n";
        assert_eq!(
            parse_ldd(text).expect_err("fails"),
            "libfoo.so.1 => not found"
        );
    }

    #[test]
    fn the_same_inputs_give_the_same_tag_and_a_changed_file_a_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("app");
        std::fs::write(&bin, b"one").expect("write");
        let spec = || ImageSpec::new("t", "65532:65532").file(&bin, "/app", 0o755);
        let a = spec().build(&dir.path().join("cache")).expect("build");
        let b = spec().build(&dir.path().join("cache")).expect("build");
        assert_eq!(a.reference, b.reference, "same inputs, same tag");
        std::fs::write(&bin, b"two").expect("write");
        let c = spec().build(&dir.path().join("cache")).expect("build");
        assert_ne!(a.reference, c.reference, "a changed binary changes the tag");
        assert!(c.archive.is_file());
    }
}

/// The images of the test bed and the demo, with the contracts of
/// `images/*.Containerfile` (and of the upstream images for CoreDNS and
/// pause).
pub mod catalog {
    use std::path::Path;

    use super::{ImageSpec, LocalImage, cache_dir};
    use crate::tools::try_tool_path;
    use crate::{Result, workspace_binary};

    /// The pod sandbox: holds a pod's namespaces (`e2e/tools/pause`).
    pub fn pause() -> Result<LocalImage> {
        ImageSpec::new("pause", "65535:65535")
            .binary(&try_tool_path("pause")?, "/pause")?
            .entrypoint(&["/pause"])
            .build(&cache_dir())
    }

    /// Cluster DNS, like the upstream CoreDNS image (non-root, `/coredns`).
    pub fn coredns() -> Result<LocalImage> {
        ImageSpec::new("coredns", "65532:65532")
            .binary(&try_tool_path("coredns")?, "/coredns")?
            .ca_certificates()
            .entrypoint(&["/coredns"])
            .ports(&[53])
            .build(&cache_dir())
    }

    /// images/operator.Containerfile: distroless/cc nonroot, the binary in
    /// /usr/local/bin, ports 8080 (metrics) and 8081 (health).
    pub fn operator() -> Result<LocalImage> {
        ImageSpec::new("ferrotel-operator", "65532:65532")
            .binary(
                &workspace_binary("ferrotel-operator")?,
                "/usr/local/bin/ferrotel-operator",
            )?
            .ca_certificates()
            .entrypoint(&["/usr/local/bin/ferrotel-operator"])
            .ports(&[8080, 8081])
            .build(&cache_dir())
    }

    /// images/probe.Containerfile: distroless/cc, uid 0 (added capabilities
    /// are only effective for root in a pod), port 9464.
    pub fn probe() -> Result<LocalImage> {
        ImageSpec::new("ferrotel-probe", "0:0")
            .binary(
                &workspace_binary("ferrotel-probe")?,
                "/usr/local/bin/ferrotel-probe",
            )?
            .ca_certificates()
            .entrypoint(&["/usr/local/bin/ferrotel-probe"])
            .ports(&[9464])
            .build(&cache_dir())
    }

    /// images/collector.Containerfile: our ocb build at /otelcol, nonroot,
    /// ports 4317, 4318, 8888.
    pub fn collector() -> Result<LocalImage> {
        ImageSpec::new("otelcol", "65532:65532")
            .binary(&try_tool_path("otelcol")?, "/otelcol")?
            .ca_certificates()
            .entrypoint(&["/otelcol"])
            .ports(&[4317, 4318, 8888])
            .build(&cache_dir())
    }

    /// The demo's Go backend (`e2e/apps/demo/backend`), built with the
    /// machine's Go, symbols and DWARF kept (the Go probe reads them).
    pub fn go_backend() -> Result<LocalImage> {
        let out = cache_dir().join("build");
        let binary = crate::stack::build_go_backend(&out)?;
        ImageSpec::new("demo-backend", "65532:65532")
            .binary(&binary, "/app/backend")?
            .entrypoint(&["/app/backend"])
            .ports(&[8080])
            .build(&cache_dir())
    }

    /// The demo's Python frontend (`e2e/apps/demo/frontend.py`, standard
    /// library only).
    pub fn python_frontend() -> Result<LocalImage> {
        let app = crate::stack::workspace_root().join("e2e/apps/demo/frontend.py");
        python_image("demo-frontend", &[(&app, "/app/frontend.py")])?
            .entrypoint(&["/usr/bin/python3.11", "/app/frontend.py"])
            .ports(&[8000])
            .build(&cache_dir())
    }

    /// The views test's Python tiers and worker (`e2e/apps/views/tier.py`).
    pub fn views_python() -> Result<LocalImage> {
        let app = crate::stack::workspace_root().join("e2e/apps/views/tier.py");
        python_image("views-python", &[(&app, "/app/tier.py")])?
            .entrypoint(&["/usr/bin/python3.11", "/app/tier.py"])
            .ports(&[8080])
            .build(&cache_dir())
    }

    /// The views test's Go middle tier (`e2e/apps/views/middle`), built like
    /// [`go_backend`].
    pub fn views_middle() -> Result<LocalImage> {
        let out = cache_dir().join("build");
        let binary = crate::stack::build_go_app("e2e/apps/views/middle", "views-middle", &out)?;
        ImageSpec::new("views-middle", "65532:65532")
            .binary(&binary, "/app/middle")?
            .entrypoint(&["/app/middle"])
            .ports(&[8080])
            .build(&cache_dir())
    }

    /// Python scripts (standard library only) on Debian's `python3.11`: the
    /// interpreter, the libraries `ldd` names for it and its extension
    /// modules, and the standard library.
    fn python_image(name: &str, scripts: &[(&Path, &str)]) -> Result<ImageSpec> {
        let python = Path::new("/usr/bin/python3.11");
        let mut spec = ImageSpec::new(name, "65532:65532")
            .binary(python, "/usr/bin/python3.11")?
            .tree(
                Path::new("/usr/lib/python3.11"),
                "/usr/lib/python3.11",
                &[
                    "__pycache__",
                    "test",
                    "idlelib",
                    "tkinter",
                    "turtledemo",
                    "ensurepip",
                ],
            )?;
        for (source, path) in scripts {
            spec = spec.file(source, path, 0o644);
        }
        Ok(spec
            .env("PYTHONDONTWRITEBYTECODE=1")
            .env("PYTHONUNBUFFERED=1"))
    }
}
