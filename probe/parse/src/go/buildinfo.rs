//! Go build information: the `.go.buildinfo` section every Go ≥ 1.18 binary
//! carries (also when stripped), naming the toolchain and the module versions.
//!
//! Layout: a 32-byte header (`\xff Go buildinf:`, pointer size, flags), then,
//! when flag bit 1 is set ("inline strings", Go ≥ 1.18), two uvarint-length
//! prefixed strings: the Go version and the module info. Module info is a
//! text block (`path`, `mod`, `dep`, `=>`, `build` lines) wrapped in 16-byte
//! sentinels that we strip.

use std::collections::BTreeMap;

/// What a Go binary says about how it was built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildInfo {
    /// Toolchain version as printed by `go version`, e.g. `go1.23.5`.
    pub go_version: String,
    /// Main package path (`path` line).
    pub main_path: Option<String>,
    /// Module path -> version of the main module and every dependency,
    /// after `=>` replacements.
    pub modules: BTreeMap<String, String>,
    /// `build` settings (`GOEXPERIMENT`, `-ldflags`, ...).
    pub settings: BTreeMap<String, String>,
}

/// Why `.go.buildinfo` could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildInfoError {
    #[error("section .go.buildinfo is shorter than its 32-byte header")]
    Truncated,
    #[error("section .go.buildinfo has no \"\\xff Go buildinf:\" magic; not a Go binary")]
    BadMagic,
    #[error(
        "section .go.buildinfo uses the pre-Go-1.18 pointer format; Go {0} is too old for the Go probe (needs Go 1.18 or newer)"
    )]
    PointerFormat(String),
    #[error("section .go.buildinfo has a malformed length-prefixed string")]
    BadString,
}

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
const FLAG_INLINE_STRINGS: u8 = 0x2;

impl BuildInfo {
    /// Parses the contents of the `.go.buildinfo` section.
    pub fn parse(section: &[u8]) -> Result<Self, BuildInfoError> {
        if section.len() < HEADER_LEN {
            return Err(BuildInfoError::Truncated);
        }
        if &section[..MAGIC.len()] != MAGIC {
            return Err(BuildInfoError::BadMagic);
        }
        let flags = section[MAGIC.len() + 1];
        if flags & FLAG_INLINE_STRINGS == 0 {
            return Err(BuildInfoError::PointerFormat("<1.18".to_owned()));
        }
        let mut rest = &section[HEADER_LEN..];
        let go_version = read_string(&mut rest)?;
        let modinfo = read_string(&mut rest)?;
        let mut info = BuildInfo {
            go_version,
            ..Default::default()
        };
        info.parse_modinfo(&modinfo);
        Ok(info)
    }

    fn parse_modinfo(&mut self, modinfo: &str) {
        // The block is wrapped in 16-byte binary sentinels; the text proper
        // starts at the first line keyword.
        let text = if modinfo.len() >= 33 && modinfo.as_bytes()[modinfo.len() - 17] == b'\n' {
            modinfo.get(16..modinfo.len() - 16).unwrap_or(modinfo)
        } else {
            modinfo
        };
        let mut last_module: Option<String> = None;
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                ["path", path, ..] => self.main_path = Some((*path).to_owned()),
                ["mod" | "dep", path, version, ..] => {
                    self.modules
                        .insert((*path).to_owned(), (*version).to_owned());
                    last_module = Some((*path).to_owned());
                }
                ["=>", _replacement, version, ..] => {
                    // A replaced module: the code compiled in is the
                    // replacement's, so its version is the one that matters.
                    if let Some(path) = &last_module {
                        self.modules.insert(path.clone(), (*version).to_owned());
                    }
                }
                ["build", setting] => {
                    if let Some((key, value)) = setting.split_once('=') {
                        self.settings.insert(key.to_owned(), value.to_owned());
                    }
                }
                _ => {}
            }
        }
    }

    /// `(major, minor)` of the toolchain, e.g. `(1, 23)` for `go1.23.5`.
    pub fn go_minor(&self) -> Option<(u32, u32)> {
        parse_go_version(&self.go_version).map(|(major, minor, _)| (major, minor))
    }

    /// The version of a module compiled into the binary.
    pub fn module_version(&self, path: &str) -> Option<&str> {
        self.modules.get(path).map(String::as_str)
    }
}

/// Parses `go1.23.5`, `go1.26rc1`, `go1.21.0 X:nocoverageredesign` into
/// `(1, 23, 5)`; pre-releases count as patch 0.
pub fn parse_go_version(version: &str) -> Option<(u32, u32, u32)> {
    let v = version.strip_prefix("go")?;
    let v = v.split([' ', '-', '+']).next()?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor_text = parts.next()?;
    let minor_digits: String = minor_text
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let minor = minor_digits.parse().ok()?;
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

fn read_uvarint(data: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in data.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *data = &data[i + 1..];
            return Some(value);
        }
    }
    None
}

fn read_string(data: &mut &[u8]) -> Result<String, BuildInfoError> {
    let len = read_uvarint(data).ok_or(BuildInfoError::BadString)? as usize;
    if len > data.len() {
        return Err(BuildInfoError::BadString);
    }
    let s = String::from_utf8_lossy(&data[..len]).into_owned();
    *data = &data[len..];
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(version: &str, modinfo: &str) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(8);
        out.push(FLAG_INLINE_STRINGS);
        out.resize(HEADER_LEN, 0);
        for s in [version, modinfo] {
            let mut len = s.len();
            while len >= 0x80 {
                out.push((len as u8 & 0x7f) | 0x80);
                len >>= 7;
            }
            out.push(len as u8);
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    #[test]
    fn inline_buildinfo_yields_go_version_modules_and_settings() {
        let text = "path\tex/app\nmod\tex/app\t(devel)\t\ndep\tgoogle.golang.org/grpc\tv1.68.1\th1:x\n\
                    dep\tgithub.com/a/b\tv1.0.0\th1:y\n=>\tgithub.com/c/b\tv1.2.0\th1:z\nbuild\tGOEXPERIMENT=noswissmap\n";
        let wrapped = format!("{}{}{}", "0".repeat(16), text, "1".repeat(16));
        let info =
            BuildInfo::parse(&section("go1.23.5", &wrapped)).expect("valid buildinfo parses");
        assert_eq!(info.go_version, "go1.23.5");
        assert_eq!(info.go_minor(), Some((1, 23)));
        assert_eq!(info.main_path.as_deref(), Some("ex/app"));
        assert_eq!(
            info.module_version("google.golang.org/grpc"),
            Some("v1.68.1")
        );
        assert_eq!(
            info.module_version("github.com/a/b"),
            Some("v1.2.0"),
            "replacement version wins"
        );
        assert_eq!(
            info.settings.get("GOEXPERIMENT").map(String::as_str),
            Some("noswissmap")
        );
    }

    #[test]
    fn non_go_and_truncated_sections_are_rejected() {
        assert_eq!(BuildInfo::parse(b"short"), Err(BuildInfoError::Truncated));
        assert_eq!(BuildInfo::parse(&[0u8; 64]), Err(BuildInfoError::BadMagic));
        let mut old = section("go1.17", "");
        old[MAGIC.len() + 1] = 0;
        assert!(matches!(
            BuildInfo::parse(&old),
            Err(BuildInfoError::PointerFormat(_))
        ));
    }

    #[test]
    fn go_versions_parse_including_prereleases_and_experiments() {
        assert_eq!(parse_go_version("go1.23.5"), Some((1, 23, 5)));
        assert_eq!(parse_go_version("go1.26rc1"), Some((1, 26, 0)));
        assert_eq!(
            parse_go_version("go1.21.0 X:boringcrypto"),
            Some((1, 21, 0))
        );
        assert_eq!(parse_go_version("devel"), None);
    }
}
