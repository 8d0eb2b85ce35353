//! Go's build info: the `\xff Go buildinf:` block that `go version -m` reads (Go >= 1.13).
//!
//! The block is 32 bytes: the 14-byte magic, the pointer size, a flags byte, then either
//! - (Go >= 1.18, flag bit 1 set) the version and the module info inline after the
//!   header, each as a uvarint length and the bytes; or
//! - (Go 1.13 .. 1.17) two pointers to Go string headers (data pointer, length) holding
//!   the version and the module info, which must be followed through the ELF segments.
//!
//! The module info of Go >= 1.18 has `build\tKEY=VALUE` lines, among them
//! `build\t-tags=a,b,c` when the binary was built with tags. Older module info has no
//! build settings: the tags are then unknown. Mirrors `debug/buildinfo` in Go's library.
//! Go < 1.13 writes no build info; its version is then read from the symbol
//! `runtime.buildVersion` when the binary is not stripped.

use super::elf::{Elf, Layout};

/// The magic at the start of the build info block.
pub const MAGIC: &[u8] = b"\xff Go buildinf:";
/// The size of the header before the inline strings.
const HEADER_LEN: usize = 32;
/// Go aligns the block to 16 bytes.
pub const ALIGN: usize = 16;
/// Flag: the strings follow the header inline (Go >= 1.18).
const FLAG_INLINE: u8 = 0x2;
/// Flag: big-endian pointers (pointer format).
const FLAG_BIG_ENDIAN: u8 = 0x1;
/// Strings longer than this are not believed (a corrupt length).
const MAX_STRING: u64 = 1 << 20;

/// Why a build info block could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildInfoError {
    #[error("no '\\xff Go buildinf:' magic")]
    NoMagic,
    #[error("build info header is cut short ({len} of 32 bytes)")]
    Short { len: usize },
    #[error("unsupported pointer size {size} in the build info header")]
    BadPointerSize { size: u8 },
    #[error("bad {what} string in the build info: {why}")]
    BadString { what: &'static str, why: String },
    #[error("the build info points to address {addr:#x}, which is not in the file")]
    Unmapped { addr: u64 },
}

/// What a build info block says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildInfo {
    /// `go1.19.8`; empty when the binary does not say.
    pub version: String,
    /// The module info text without its sentinels; may be empty.
    pub modinfo: String,
    /// True for the Go >= 1.18 inline format, whose module info carries build settings.
    pub inline: bool,
}

impl BuildInfo {
    /// The `-tags` build setting: `Some(vec![])` when a Go >= 1.18 binary has build
    /// settings but no tags, `None` when the binary records no build settings.
    pub fn tags(&self) -> Option<Vec<String>> {
        let settings = build_settings(&self.modinfo);
        if let Some((_, v)) = settings.iter().find(|(k, _)| k == "-tags") {
            return Some(
                v.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect(),
            );
        }
        (self.inline && !settings.is_empty()).then(Vec::new)
    }

    /// The `GOARCH` build setting, when recorded.
    pub fn goarch(&self) -> Option<String> {
        build_settings(&self.modinfo)
            .into_iter()
            .find(|(k, _)| k == "GOARCH")
            .map(|(_, v)| v)
    }
}

/// Decode the block that starts at file offset `start`. Pointers of the pre-1.18 format
/// are followed through the ELF segments.
pub fn decode(elf: &Elf, start: usize) -> Result<BuildInfo, BuildInfoError> {
    let block = elf.data().get(start..).unwrap_or_default();
    if !block.starts_with(MAGIC) {
        return Err(BuildInfoError::NoMagic);
    }
    if block.len() < HEADER_LEN {
        return Err(BuildInfoError::Short { len: block.len() });
    }
    let ptr_size = block[14];
    let flags = block[15];
    if flags & FLAG_INLINE != 0 {
        let rest = &block[HEADER_LEN..];
        let (version, rest) = read_inline(rest, "version")?;
        let (modinfo, _) = read_inline(rest, "module info")?;
        return Ok(BuildInfo {
            version: text(version, "version")?,
            modinfo: text(strip_sentinels(modinfo), "module info")?,
            inline: true,
        });
    }
    let layout = Layout {
        big_endian: flags & FLAG_BIG_ENDIAN != 0,
        is_64: match ptr_size {
            4 => false,
            8 => true,
            size => return Err(BuildInfoError::BadPointerSize { size }),
        },
    };
    let ps = layout.ptr_size();
    let short = BuildInfoError::Short { len: block.len() };
    let version_ptr = layout.word(block, 16).ok_or(short.clone())?;
    let modinfo_ptr = layout.word(block, 16 + ps).ok_or(short)?;
    let version = read_go_string(elf, layout, version_ptr, "version")?;
    let modinfo = read_go_string(elf, layout, modinfo_ptr, "module info")?;
    Ok(BuildInfo {
        version: text(version, "version")?,
        modinfo: text(strip_sentinels(modinfo), "module info")?,
        inline: false,
    })
}

/// Find the block: in the `.go.buildinfo` section when the section table is there, else
/// the first 16-byte-aligned magic in the file (section table stripped).
pub fn find(elf: &Elf) -> Option<usize> {
    let data = elf.data();
    if let Some(sec) = elf.section(".go.buildinfo") {
        let bytes = data.get(sec.range())?;
        if bytes.starts_with(MAGIC) {
            return Some(sec.offset as usize);
        }
    }
    memchr::memmem::find_iter(data, MAGIC).find(|at| at % ALIGN == 0)
}

/// The symbol holding the Go version in every Go binary.
const BUILD_VERSION_SYMBOL: &str = "runtime.buildVersion";

/// The Go version from the symbol table (`runtime.buildVersion`), for binaries without
/// build info (Go < 1.13) that are not stripped.
pub fn version_from_symtab(elf: &Elf) -> Option<String> {
    let addr = elf.symbol(BUILD_VERSION_SYMBOL)?;
    let bytes = read_go_string(elf, elf.layout, addr, "version").ok()?;
    let version = std::str::from_utf8(bytes).ok()?;
    version.starts_with("go").then(|| version.to_string())
}

/// A uvarint-prefixed string; returns it and the bytes after it.
fn read_inline<'a>(
    b: &'a [u8],
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), BuildInfoError> {
    let (len, used) = uvarint(b).ok_or_else(|| BuildInfoError::BadString {
        what,
        why: "bad length prefix".into(),
    })?;
    let rest = &b[used..];
    if len > MAX_STRING || len as usize > rest.len() {
        return Err(BuildInfoError::BadString {
            what,
            why: format!("length {len} runs past the end of the file"),
        });
    }
    Ok(rest.split_at(len as usize))
}

/// A Go string header (data pointer, length) at `addr`, then its bytes.
fn read_go_string<'data>(
    elf: &Elf<'data>,
    layout: Layout,
    addr: u64,
    what: &'static str,
) -> Result<&'data [u8], BuildInfoError> {
    if addr == 0 {
        return Ok(&[]);
    }
    let ps = layout.ptr_size();
    let header = elf
        .read_vaddr(addr, 2 * ps as u64)
        .ok_or(BuildInfoError::Unmapped { addr })?;
    let unmapped = BuildInfoError::Unmapped { addr };
    let ptr = layout.word(header, 0).ok_or(unmapped.clone())?;
    let len = layout.word(header, ps).ok_or(unmapped)?;
    if len == 0 {
        return Ok(&[]);
    }
    if len > MAX_STRING {
        return Err(BuildInfoError::BadString {
            what,
            why: format!("implausible length {len}"),
        });
    }
    elf.read_vaddr(ptr, len)
        .ok_or(BuildInfoError::Unmapped { addr: ptr })
}

fn text(b: &[u8], what: &'static str) -> Result<String, BuildInfoError> {
    String::from_utf8(b.to_vec()).map_err(|_| BuildInfoError::BadString {
        what,
        why: "not UTF-8".into(),
    })
}

/// The module info is wrapped in two 16-byte sentinels; `debug/buildinfo` drops them
/// when the text ends with a newline before the closing one.
fn strip_sentinels(b: &[u8]) -> &[u8] {
    if b.len() >= 33 && b[b.len() - 17] == b'\n' {
        &b[16..b.len() - 16]
    } else {
        &[]
    }
}

/// `build\tKEY=VALUE` lines of the module info, with Go-quoted keys or values unquoted.
pub fn build_settings(modinfo: &str) -> Vec<(String, String)> {
    modinfo
        .lines()
        .filter_map(|line| line.strip_prefix("build\t"))
        .filter_map(|kv| {
            let (k, v) = split_setting(kv)?;
            Some((unquote(k), unquote(v)))
        })
        .collect()
}

/// Split at the first `=` outside a quoted key.
fn split_setting(kv: &str) -> Option<(&str, &str)> {
    if kv.starts_with('"') {
        let end = closing_quote(kv)?;
        let rest = kv[end + 1..].strip_prefix('=')?;
        Some((&kv[..=end], rest))
    } else {
        kv.split_once('=')
    }
}

/// The index of the quote closing the one at index 0.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// Undo Go's `strconv.Quote` for the simple escapes build settings use.
fn unquote(s: &str) -> String {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return s.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Go's `binary.Uvarint`: the value and the number of bytes used.
fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((x, i + 1));
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gobin::elf::tests::{tiny_elf64, TinyElf, BASE};

    const START: &[u8; 16] = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6";
    const END: &[u8; 16] = b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2";

    /// An ELF file followed by `tail`, and the offset of `tail`.
    fn elf_then(tail: &[u8]) -> (Vec<u8>, usize) {
        let mut data = tiny_elf64(62, ".text", b"");
        let at = data.len();
        data.extend_from_slice(tail);
        (data, at)
    }

    fn varstr(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut n = s.len();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(s);
        out
    }

    pub(crate) fn inline_block(version: &str, modinfo: &str) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(8);
        b.push(FLAG_INLINE);
        b.resize(HEADER_LEN, 0);
        b.extend(varstr(version.as_bytes()));
        let mut m = START.to_vec();
        m.extend_from_slice(modinfo.as_bytes());
        m.extend_from_slice(END);
        b.extend(varstr(&m));
        b
    }

    #[test]
    fn decodes_the_inline_format() {
        let modinfo = "path\tk8s.io/kubernetes/cmd/kubelet\nbuild\t-compiler=gc\nbuild\t-tags=selinux,notest,nokmem\nbuild\tGOARCH=arm64\n";
        let block = inline_block("go1.19.8", modinfo);
        let data = tiny_elf64(183, ".go.buildinfo", &block);
        let elf = Elf::parse(&data).unwrap();
        let at = find(&elf).unwrap();
        assert_eq!(&data[at..][..block.len()], block);
        let bi = decode(&elf, at).unwrap();
        assert_eq!(bi.version, "go1.19.8");
        assert_eq!(bi.modinfo, modinfo);
        assert_eq!(
            bi.tags(),
            Some(vec!["selinux".into(), "notest".into(), "nokmem".into()])
        );
        assert_eq!(bi.goarch().as_deref(), Some("arm64"));
    }

    #[test]
    fn tags_are_none_empty_or_listed() {
        let cases: [(&str, bool, Option<&[&str]>); 5] = [
            ("build\t-compiler=gc\nbuild\tGOOS=linux\n", true, Some(&[])),
            ("build\t-tags=nokmem\n", true, Some(&["nokmem"])),
            ("build\t\"-tags\"=\"a, b\"\n", true, Some(&["a", "b"])),
            ("path\tx\nmod\tx\t(devel)\t\n", false, None),
            ("", true, None),
        ];
        for (modinfo, inline, want) in cases {
            let bi = BuildInfo {
                version: "go1.21.0".into(),
                modinfo: modinfo.into(),
                inline,
            };
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(bi.tags(), want, "modinfo {modinfo:?}");
        }
    }

    /// A pre-1.18 block and what it points to, for contents mapped at `base`:
    /// [block 32][version header 16][module info header 16][version][module info].
    fn pointer_format(base: u64, version: &[u8], modinfo: &[u8]) -> Vec<u8> {
        let mut data = MAGIC.to_vec();
        data.push(8);
        data.push(0);
        data.extend((base + 32).to_le_bytes());
        data.extend((base + 48).to_le_bytes());
        data.extend((base + 64).to_le_bytes());
        data.extend((version.len() as u64).to_le_bytes());
        data.extend((base + 64 + version.len() as u64).to_le_bytes());
        data.extend((modinfo.len() as u64).to_le_bytes());
        data.extend(version);
        data.extend(modinfo);
        data
    }

    #[test]
    fn decodes_the_pointer_format_through_segments() {
        let version = b"go1.15.15";
        let modinfo = [&START[..], b"path\tx\n", &END[..]].concat();
        let tiny = TinyElf {
            machine: 62,
            layout: TinyElf::LE64,
        };
        let at = tiny.contents_offset();
        let contents = pointer_format(BASE + at, version, &modinfo);
        let data = tiny.build(".go.buildinfo", &contents);
        let elf = Elf::parse(&data).unwrap();
        let bi = decode(&elf, at as usize).unwrap();
        assert_eq!(bi.version, "go1.15.15");
        assert_eq!(bi.modinfo, "path\tx\n");
        assert_eq!(bi.tags(), None, "pre-1.18 binaries record no tags");

        // The same block pointing where no segment maps the file.
        let contents = pointer_format(0x1000, version, &modinfo);
        let data = tiny.build(".go.buildinfo", &contents);
        let elf = Elf::parse(&data).unwrap();
        let err = decode(&elf, at as usize).unwrap_err();
        assert_eq!(err, BuildInfoError::Unmapped { addr: 0x1000 + 32 });
    }

    #[test]
    fn bad_blocks_are_errors() {
        let mut bad_ptr = MAGIC.to_vec();
        bad_ptr.extend([3, 0]);
        bad_ptr.resize(HEADER_LEN, 0);
        let mut long = inline_block("go1.19", "");
        long[HEADER_LEN] = 0x7f; // version length 127 > what follows
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "no magic",
                b"\x7fELF".to_vec(),
                "no '\\xff Go buildinf:' magic",
            ),
            (
                "short",
                MAGIC.to_vec(),
                "build info header is cut short (14 of 32 bytes)",
            ),
            (
                "pointer size",
                bad_ptr,
                "unsupported pointer size 3 in the build info header",
            ),
            (
                "length",
                long,
                "bad version string in the build info: length 127 runs past the end of the file",
            ),
        ];
        for (name, tail, want) in cases {
            let (data, at) = elf_then(&tail);
            let elf = Elf::parse(&data).unwrap();
            let got = decode(&elf, at).unwrap_err().to_string();
            assert_eq!(got, want, "case {name}");
        }
    }

    #[test]
    fn find_prefers_the_section_and_needs_alignment_otherwise() {
        // Contents start at file offset 120 (not 16-aligned): one magic there, one at 144.
        let mut contents = MAGIC.to_vec();
        contents.resize(24, 0);
        contents.extend(MAGIC);
        contents.resize(56, 0);
        let cases = [
            (".go.buildinfo", contents.clone(), Some(120)),
            (".data", contents, Some(144)),
            (".data", vec![0u8; 64], None),
        ];
        for (section, contents, want) in cases {
            let data = tiny_elf64(62, section, &contents);
            let elf = Elf::parse(&data).unwrap();
            assert_eq!(find(&elf), want, "section {section}");
        }
    }

    #[test]
    fn uvarint_matches_go() {
        type Case<'a> = (&'a [u8], Option<(u64, usize)>);
        let cases: [Case; 4] = [
            (&[0x00], Some((0, 1))),
            (&[0x7f], Some((127, 1))),
            (&[0x80, 0x01], Some((128, 2))),
            (&[0x80], None),
        ];
        for (bytes, want) in cases {
            assert_eq!(uvarint(bytes), want, "bytes {bytes:?}");
        }
    }
}
